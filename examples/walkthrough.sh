#!/usr/bin/env bash
# Walk one user through Latchkey's PIN flow against a running server, speaking only the
# HTTP contract (the Authenticate v1.2 API under /authenticate/v1-2).
#
#   LK_URL=http://127.0.0.1:8080 LK_APP=<applicationUuid> LK_API_KEY=<apiKey> \
#     bash examples/walkthrough.sh
#
# LK_APP and LK_API_KEY are what `latchkey serve` prints on its first start on an empty data
# dir, or what `latchkey app create --name NAME --data-dir DIR` prints as one JSON line.
#
#   LK_START=1 bash examples/walkthrough.sh
#
# starts `${LK_BIN:-${CARGO_TARGET_DIR:-target}/release/latchkey}` itself (it builds nothing) on a temporary data
# dir and a free loopback port, creates an application with `app create`, walks through, and
# stops the server on exit. LK_KEEP=1 keeps that data dir and its server.log.
# LK_VERIFY=openssl|python picks the tool that checks the JWT signature (default: python3 with
# the `cryptography` package if it imports, else openssl).
#
# Needs bash, curl, python3 (standard library only) and, without `cryptography`, openssl.
# Exits non-zero with a message at the first step that does not behave as the contract says.
set -euo pipefail

BASE=/authenticate/v1-2
PIN=${LK_PIN:-1234}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lk-walk-XXXXXX")
SERVER_PID=""
STEP=0

# == helpers ====================================================================================

die() {
    echo "FAILED: $*" >&2
    if [ -n "$SERVER_PID" ] && [ -f "$WORK/server.log" ]; then
        echo "--- last lines of the server log ($WORK/server.log):" >&2
        tail -n 15 "$WORK/server.log" >&2 || true
    fi
    exit 1
}

cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "${LK_KEEP:-}" ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() { command -v "$1" >/dev/null 2>&1 || die "this walkthrough needs $1 on PATH"; }

step() {
    STEP=$((STEP + 1))
    printf '\n%2d. %s\n' "$STEP" "$1"
}

say() { printf '    %s\n' "$*"; }

# First 8 characters of a secret, enough to see it change.
short() { printf '%s...' "${1:0:8}"; }

# json_obj key=value ...: a JSON object of string values, built safely.
json_obj() {
    "$PYTHON" -c 'import json, sys
print(json.dumps(dict(a.split("=", 1) for a in sys.argv[1:])))' "$@"
}

# jget PATH [FILE]: a value from the last response (or FILE), by a dotted path such as
# accessToken.token or devices.0.deviceUuid; empty when absent. Booleans print as JSON.
jget() {
    "$PYTHON" - "$1" "${2:-$WORK/body}" <<'PY'
import json, sys
try:
    v = json.load(open(sys.argv[2]))
except ValueError:
    sys.exit(0)
for k in sys.argv[1].split("."):
    if isinstance(v, list) and k.isdigit() and int(k) < len(v):
        v = v[int(k)]
    elif isinstance(v, dict) and k in v:
        v = v[k]
    else:
        sys.exit(0)
print(json.dumps(v) if isinstance(v, (bool, list, dict)) or v is None else v)
PY
}

# req METHOD PATH [BODY] [HEADER...]: one call under the base path; sets STATUS, STATE and CODE
# (the envelope's status and code) and leaves the body in $WORK/body.
req() {
    local method=$1 path=$2 body=${3:-}
    shift 3 || shift $#
    local args=(-sS --noproxy '*' --max-time 30 -X "$method" -o "$WORK/body" -w '%{http_code}')
    local h
    for h in "$@"; do args+=(-H "$h"); done
    if [ -n "$body" ]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    STATUS=$(curl "${args[@]}" "$LK_URL$BASE$path") \
        || die "$method $BASE$path: no HTTP answer from $LK_URL (is the server running?)"
    STATE=$(jget responseStatus.status)
    CODE=$(jget responseStatus.code)
}

body_excerpt() { head -c 300 "$WORK/body"; }

# expect_ok WHAT: the last call answered 200 with a SUCCESS envelope.
expect_ok() {
    if [ "$STATUS" != 200 ] || [ "$STATE" != SUCCESS ]; then
        die "$1: expected 200 SUCCESS, got $STATUS ${CODE:-<no code>}: $(body_excerpt)"
    fi
}

# expect_error WHAT HTTP_STATUS CODE_PATTERN: the last call was refused as the contract says.
expect_error() {
    # shellcheck disable=SC2254 # the code is a glob pattern on purpose
    case "$STATUS:$STATE:$CODE" in
        "$2":ERROR:$3) ;;
        *) die "$1: expected $2 ERROR $3," \
            "got $STATUS ${STATE:-?} ${CODE:-<no code>}: $(body_excerpt)" ;;
    esac
}

need_field() {
    local v
    v=$(jget "$1")
    [ -n "$v" ] || die "$2: the answer lacks $1: $(body_excerpt)"
    printf '%s' "$v"
}

# The client side of hashedPin, as the original SDKs compute it:
# Base64(SHA-512(device salt || PIN)). The salt never leaves the device.
hashed_pin() {
    "$PYTHON" - "$DEVICE_SALT" "$1" <<'PY'
import base64, hashlib, sys
salt = bytes.fromhex(sys.argv[1])
print(base64.b64encode(hashlib.sha512(salt + sys.argv[2].encode()).digest()).decode())
PY
}

# jwt_claim TOKEN PART NAME: a claim from the header (PART=0) or payload (PART=1); no checks.
jwt_claim() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import base64, json, sys
p = sys.argv[1].split(".")[int(sys.argv[2])]
v = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))).get(sys.argv[3], "")
print(v)
PY
}

# verify_jwt TOKEN PEM_FILE ALG: checks the token's signature with a tool that is not Latchkey.
# Sets VERIFIED_WITH. Returns non-zero when the signature does not verify.
verify_jwt() {
    local token=$1 pem=$2 alg=$3 tool=${LK_VERIFY:-}
    if [ -z "$tool" ]; then
        if "$PYTHON" -c 'import cryptography' 2>/dev/null; then tool=python; else tool=openssl; fi
    fi
    case "$tool" in
        python) verify_with_python "$@" ;;
        openssl) verify_with_openssl "$@" ;;
        *) die "LK_VERIFY must be python or openssl, not $tool" ;;
    esac
}

verify_with_python() {
    VERIFIED_WITH="python3 cryptography"
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import base64, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

token, pem, alg = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
head, body, sig = token.split(".")
data = f"{head}.{body}".encode()
sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
key = load_pem_public_key(pem)
try:
    if alg in ("ES256", "ES384"):
        n = len(sig) // 2          # JWS ECDSA signatures are raw r || s, not DER
        der = encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
        key.verify(der, data, ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA384()))
    elif alg == "RS256":
        key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "EdDSA":
        key.verify(sig, data)
    else:
        sys.exit(f"unsupported alg {alg}")
except InvalidSignature:
    sys.exit(1)
PY
}

verify_with_openssl() {
    need openssl
    VERIFIED_WITH="openssl $(openssl version | cut -d' ' -f2)"
    local token=$1 pem=$2 alg=$3
    # the signing input and the raw signature bytes; for ECDSA, r || s re-encoded as the DER
    # SEQUENCE { INTEGER r, INTEGER s } that `openssl dgst -verify` expects
    "$PYTHON" - "$token" "$alg" "$WORK/signed" "$WORK/sig" <<'PY'
import base64, sys
token, alg, signed, sigfile = sys.argv[1:]
head, body, sig = token.split(".")
open(signed, "wb").write(f"{head}.{body}".encode())
sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))

def der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + der_len(len(b)) + b

def der_len(n):
    return bytes([n]) if n < 0x80 else b"\x81" + bytes([n])

if alg in ("ES256", "ES384"):
    n = len(sig) // 2
    seq = der_int(sig[:n]) + der_int(sig[n:])
    sig = b"\x30" + der_len(len(seq)) + seq
open(sigfile, "wb").write(sig)
PY
    case "$alg" in
        ES256 | RS256) openssl dgst -sha256 -verify "$pem" -signature "$WORK/sig" "$WORK/signed" ;;
        ES384) openssl dgst -sha384 -verify "$pem" -signature "$WORK/sig" "$WORK/signed" ;;
        EdDSA)
            openssl pkeyutl -verify -pubin -inkey "$pem" -rawin \
                -in "$WORK/signed" -sigfile "$WORK/sig"
            ;;
        *) die "unsupported JWT alg $alg" ;;
    esac >/dev/null 2>&1
}

# A token with one character of its payload changed, to show the check can fail.
tampered() {
    "$PYTHON" - "$1" <<'PY'
import sys
h, b, s = sys.argv[1].split(".")
b = b[:-1] + ("A" if b[-1] != "A" else "B")
print(f"{h}.{b}.{s}")
PY
}

# == optional: start a server of our own ========================================================

start_server() {
    local target=${CARGO_TARGET_DIR:-target}
    local bin=${LK_BIN:-$target/release/latchkey}
    if [ -z "${LK_BIN:-}" ] && [ ! -x "$bin" ]; then   # run from elsewhere than the repo root
        bin="$(cd "$(dirname "$0")/.." && pwd)/$target/release/latchkey"
    fi
    [ -x "$bin" ] || die "no server binary at $bin: \`cargo build --release\` it or set LK_BIN"
    local port
    port=$("$PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

    "$bin" app create --name walkthrough --data-dir "$WORK/data" \
        >"$WORK/app.out" 2>"$WORK/app.err" \
        || die "\`latchkey app create\` failed: $(tail -n 3 "$WORK/app.err")"
    grep '^[[:space:]]*{' "$WORK/app.out" | tail -n 1 >"$WORK/app.json" || true
    LK_APP=$(jget applicationUuid "$WORK/app.json")
    LK_API_KEY=$(jget apiKey "$WORK/app.json")
    [ -n "$LK_APP" ] && [ -n "$LK_API_KEY" ] \
        || die "\`latchkey app create\` printed no {\"applicationUuid\", \"apiKey\"} line:" \
            "$(head -c 300 "$WORK/app.out")"

    "$bin" serve --data-dir "$WORK/data" --listen "127.0.0.1:$port" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    LK_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 300); do
        if curl -sf --noproxy '*' --max-time 1 -o /dev/null "$LK_URL/health/live"; then
            echo "started $bin (pid $SERVER_PID) on $LK_URL, data dir $WORK/data"
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited at start"
        sleep 0.1
    done
    die "the server did not answer /health/live within 30 s"
}

# == the walk ===================================================================================

need curl
need python3
# the interpreter itself, once: a version manager's shim (pyenv) costs a fraction of a second
# on every one of the few dozen calls below
PYTHON=$(python3 -c 'import sys; print(sys.executable or "python3")')

if [ "${LK_START:-}" = 1 ]; then
    start_server
else
    LK_URL=${LK_URL:-http://127.0.0.1:8080}
    : "${LK_APP:?set LK_APP to an applicationUuid (or LK_START=1 to start a server)}"
    : "${LK_API_KEY:?set LK_API_KEY to the API key of that application (or LK_START=1)}"
fi
LK_URL=${LK_URL%/}
echo "Latchkey walkthrough against $LK_URL, application $LK_APP"

KEY="x-api-key: $LK_API_KEY"
USERNAME="walker-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(4))')"
# The device's own secret salt; a real client keeps it in its key store.
DEVICE_SALT=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(64))')  # 64 bytes
HASHED_PIN=$(hashed_pin "$PIN")

step "liveness: GET /health/live"
STATUS=$(curl -sS --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}' \
    "$LK_URL/health/live") \
    || die "no HTTP answer from $LK_URL (is the server running?)"
[ "$STATUS" = 200 ] || die "/health/live answered $STATUS"
say "200"

step "sign-up: POST /self-service/user (x-api-key)"
req POST /self-service/user \
    "$(json_obj applicationUuid="$LK_APP" username="$USERNAME" email="$USERNAME@example.test")" \
    "$KEY"
expect_ok "sign-up"
ACTIVATION_TOKEN=$(need_field activationToken "sign-up")
[[ $ACTIVATION_TOKEN =~ ^[0-9]{6}$ ]] \
    || die "sign-up: activationToken is not 6 digits: $ACTIVATION_TOKEN"
say "$STATUS $STATE  username=$USERNAME  activationToken=$ACTIVATION_TOKEN"

step "activate user: POST /authentication/activate/user (hashedPin computed on the client)"
say "hashedPin = Base64(SHA-512(64-byte device salt || PIN \"$PIN\"))" \
    "= $(short "$HASHED_PIN") (${#HASHED_PIN} chars)"
req POST /authentication/activate/user \
    "$(json_obj applicationUuid="$LK_APP" username="$USERNAME" activationToken="$ACTIVATION_TOKEN" \
        hashedPin="$HASHED_PIN" deviceName="walkthrough laptop")" "$KEY"
expect_ok "activate user"
USER_UUID=$(need_field userUuid "activate user")
DEVICE_UUID=$(need_field deviceUuid "activate user")
AUTH_KEY_0=$(need_field authKey "activate user")
TOKEN=$(need_field accessToken.token "activate user")
say "$STATUS $STATE  userUuid=$USER_UUID  deviceUuid=$DEVICE_UUID"
say "authKey=$(short "$AUTH_KEY_0")  accessToken=$(short "$TOKEN") ($(jget accessToken.type))"

login() { # login AUTH_KEY
    req POST /authentication/login \
        "$(json_obj applicationUuid="$LK_APP" username="$USERNAME" deviceUuid="$DEVICE_UUID" \
            authKey="$1" hashedPin="$HASHED_PIN")" "$KEY"
}

step "login #1: POST /authentication/login with the authKey from activation"
login "$AUTH_KEY_0"
expect_ok "login #1"
AUTH_KEY_1=$(need_field authKey "login #1")
[ "$AUTH_KEY_1" != "$AUTH_KEY_0" ] || die "login #1: the authKey did not rotate"
say "$STATUS $STATE  authKey $(short "$AUTH_KEY_0") -> $(short "$AUTH_KEY_1")"

step "login #2: POST /authentication/login with the authKey from login #1"
login "$AUTH_KEY_1"
expect_ok "login #2"
AUTH_KEY_2=$(need_field authKey "login #2")
[ "$AUTH_KEY_2" != "$AUTH_KEY_1" ] && [ "$AUTH_KEY_2" != "$AUTH_KEY_0" ] \
    || die "login #2: the authKey did not rotate"
TOKEN=$(need_field accessToken.token "login #2")
say "$STATUS $STATE  authKey $(short "$AUTH_KEY_1") -> $(short "$AUTH_KEY_2")"

step "stale authKey: login again with the authKey from login #1 (right PIN)"
login "$AUTH_KEY_1"
expect_error "stale authKey" 400 AN-HENG-1001
say "$STATUS $STATE $CODE  \"$(jget responseStatus.message)\""

step "current user: GET /user/current (Bearer)"
BEARER="Authorization: Bearer $TOKEN"
req GET /user/current "" "$BEARER"
expect_ok "current user"
[ "$(jget userUuid)" = "$USER_UUID" ] \
    || die "current user: userUuid $(jget userUuid), expected $USER_UUID"
[ "$(jget username | tr '[:upper:]' '[:lower:]')" = "$USERNAME" ] \
    || die "current user: username $(jget username), expected $USERNAME"
say "$STATUS $STATE  username=$(jget username)  email=$(jget email)" \
    " active=$(jget active)  locked=$(jget locked)"

step "devices: GET /user/$USER_UUID/device (Bearer)"
req GET "/user/$USER_UUID/device" "" "$BEARER"
expect_ok "list devices"
COUNT=$(jget devices | "$PYTHON" -c 'import json, sys; print(len(json.load(sys.stdin)))' \
    2>/dev/null) \
    || die "list devices: no devices array: $(body_excerpt)"
[ "$COUNT" = 1 ] || die "list devices: expected 1 device, got $COUNT"
[ "$(jget devices.0.deviceUuid)" = "$DEVICE_UUID" ] \
    || die "list devices: deviceUuid $(jget devices.0.deviceUuid), expected $DEVICE_UUID"
say "$STATUS $STATE  1 device: \"$(jget devices.0.deviceName)\"  active=$(jget devices.0.active)" \
    "locked=$(jget devices.0.locked)  failedLoginAttempts=$(jget devices.0.failedLoginAttempts)"

step "renew: GET /jwt/renew (Bearer)"
OLD_TOKEN=$TOKEN
req GET /jwt/renew "" "$BEARER"
expect_ok "renew"
TOKEN=$(need_field accessToken.token "renew")
[ "$TOKEN" != "$OLD_TOKEN" ] || die "renew: got the same token back"
BEARER="Authorization: Bearer $TOKEN"
say "$STATUS $STATE  exp $(jwt_claim "$OLD_TOKEN" 1 exp) -> $(jwt_claim "$TOKEN" 1 exp)" \
    "jti $(short "$(jwt_claim "$OLD_TOKEN" 1 jti)") -> $(short "$(jwt_claim "$TOKEN" 1 jti)")"

step "validate: GET /jwt/validate (Bearer, the renewed token)"
req GET /jwt/validate "" "$BEARER"
expect_ok "validate"
say "$STATUS $STATE"

step "signature: GET /jwt/public-key?applicationUuid=... and verify outside Latchkey"
req GET "/jwt/public-key?applicationUuid=$LK_APP" ""
expect_ok "public key"
need_field publicKey "public key" >/dev/null
jget publicKey >"$WORK/public.pem"
ALG=$(need_field algorithm "public key")
KID=$(need_field kid "public key")
[ "$(jwt_claim "$TOKEN" 0 alg)" = "$ALG" ] \
    || die "signature: token alg $(jwt_claim "$TOKEN" 0 alg), public key says $ALG"
[ "$(jwt_claim "$TOKEN" 0 kid)" = "$KID" ] \
    || die "signature: token kid $(jwt_claim "$TOKEN" 0 kid), public key says $KID"
[ "$(jwt_claim "$TOKEN" 1 applicationUUID)" = "$LK_APP" ] \
    || die "signature: token applicationUUID is $(jwt_claim "$TOKEN" 1 applicationUUID)"
[ "$(jwt_claim "$TOKEN" 1 userUUID)" = "$USER_UUID" ] \
    || die "signature: token userUUID is $(jwt_claim "$TOKEN" 1 userUUID)"
verify_jwt "$TOKEN" "$WORK/public.pem" "$ALG" \
    || die "signature: the JWT does not verify with the published $ALG key ($VERIFIED_WITH)"
if verify_jwt "$(tampered "$TOKEN")" "$WORK/public.pem" "$ALG"; then
    die "signature: a tampered JWT verified too, so the check proves nothing ($VERIFIED_WITH)"
fi
say "$STATUS $STATE  alg=$ALG  kid=$KID"
say "signature verified with $VERIFIED_WITH; a token with one payload character changed is refused"

step "logout: DELETE /authentication/logout (Bearer)"
req DELETE /authentication/logout "" "$BEARER"
expect_ok "logout"
say "$STATUS $STATE"

step "validate after logout: GET /jwt/validate (must be refused)"
req GET /jwt/validate "" "$BEARER"
expect_error "validate after logout" 401 'AN-JWTT-100[123]'
say "renewed token: $STATUS $STATE $CODE"
req GET /jwt/validate "" "Authorization: Bearer $OLD_TOKEN"
expect_error "validate after logout (token of login #2)" 401 'AN-JWTT-100[123]'
say "token of login #2, same session: $STATUS $STATE $CODE"

echo
echo "walkthrough OK"
