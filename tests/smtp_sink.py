#!/usr/bin/env python3
"""A tiny real SMTP server for Latchkey's delivery tests.

Usage: python3 tests/smtp_sink.py PORT DIR

Listens on 127.0.0.1:PORT (plain SMTP, no TLS, no AUTH) and writes every message it accepts
as one file DIR/<time>-<random>.eml: a first line `X-Envelope-To: <recipients>`, then the
message exactly as received. Each file is written under a temporary name and renamed, so a
reader never sees half a message. Prints `ready` once it accepts connections, and runs until
it is killed.

Needs aiosmtpd: python3 -m pip install aiosmtpd
"""

import asyncio
import os
import sys
import time
import uuid

from aiosmtpd.smtp import SMTP


class Sink:
    """An aiosmtpd handler that keeps every message as a file."""

    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        temporary = os.path.join(self.directory, name + ".tmp")
        with open(temporary, "wb") as out:
            out.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            out.write(envelope.original_content)
        os.replace(temporary, os.path.join(self.directory, name + ".eml"))
        return "250 Message accepted"


async def main(port, directory):
    os.makedirs(directory, exist_ok=True)
    handler = Sink(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test"),
        host="127.0.0.1",
        port=port,
        reuse_address=True,
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: smtp_sink.py PORT DIR")
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
