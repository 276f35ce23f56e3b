//! GrantActor: one OpenID Connect grant (an authorize request waiting for a login, a code
//! waiting for its exchange, or a refresh-token family), the only writer of its record.
//!
//! Because one actor owns a code and one actor owns a family, the races the protocol cares
//! about are decided by mailbox order: five parallel exchanges of one code see one winner, and
//! twenty parallel refreshes with one token see one rotation and nineteen reuses.

use std::sync::Arc;

use latchkey_storage::{
    Batch, Space, StoreExt,
    records::{AuthRequestRecord, CodeRecord, FamilyRecord, GrantRecord},
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

use crate::{Error, Result, context::Context, crypto::Purpose, directory::Child};

/// How many earlier refresh secrets a family remembers to recognise reuse.
const REMEMBERED_SECRETS: usize = 64;

/// How long an OIDC-mode login may hold its request before another may finish it.
const LEASE_SECS: u64 = 30;

/// The key of each kind of grant.
pub(crate) mod ids {
    pub(crate) fn request(id: &str) -> String {
        format!("request/{id}")
    }

    pub(crate) fn code(id: &str) -> String {
        format!("code/{id}")
    }

    pub(crate) fn family(id: &str) -> String {
        format!("family/{id}")
    }
}

/// Why a code exchange or a refresh failed; every case is `invalid_grant` on the wire, but
/// the engine revokes a family on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrantFailure {
    /// Unknown, expired, wrong secret, or bound to another client, URI or verifier.
    Invalid(&'static str),
    /// A used code or an old refresh token came back: the family it started is revoked.
    Replayed { family: Option<String> },
    /// A refresh asked for a scope the grant does not hold (nothing was rotated).
    Scope,
}

/// A code exchanged: the new family and its first refresh secret.
#[derive(Debug, Clone)]
pub(crate) struct Exchanged {
    pub(crate) code: CodeRecord,
    pub(crate) family_id: String,
    pub(crate) family: FamilyRecord,
}

/// A refresh request, as the family actor checks it.
struct RefreshAsk<'a> {
    secret: &'a str,
    client_id: &'a str,
    scope: Option<&'a str>,
    new_secret: &'a str,
    now: u64,
    /// Seconds after a rotation during which the token it replaced still rotates once more.
    grace: u64,
}

/// What a code exchange must match. Its `Debug` shows no secret.
#[derive(Clone)]
pub(crate) struct Redemption {
    pub(crate) secret: String,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) verifier: Option<String>,
    pub(crate) family_id: String,
    pub(crate) refresh_secret: String,
    pub(crate) family_deadline: u64,
    pub(crate) now: u64,
}

impl std::fmt::Debug for Redemption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redemption")
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("family_id", &self.family_id)
            .finish_non_exhaustive()
    }
}

pub(crate) enum GrantMsg {
    /// Stores a new grant under this actor's id.
    Create(Box<GrantRecord>, RpcReplyPort<Result<()>>),
    /// Takes a live authorize request for one OIDC-mode login (a lease, in memory); answers
    /// the request and the lease's id.
    Claim {
        app: Uuid,
        nonce: Option<String>,
        now: u64,
        reply: RpcReplyPort<Result<(AuthRequestRecord, u64)>>,
    },
    /// The login holding this lease failed: the request may be tried again.
    Release(u64),
    /// The login holding this lease succeeded: the request is used and the code stored, in
    /// one batch.
    Finish {
        lease: u64,
        code_id: String,
        code: Box<CodeRecord>,
        reply: RpcReplyPort<Result<()>>,
    },
    /// Exchanges a code once.
    Redeem(
        Box<Redemption>,
        RpcReplyPort<Result<std::result::Result<Exchanged, GrantFailure>>>,
    ),
    /// Rotates a family's refresh token.
    Refresh {
        secret: String,
        client_id: String,
        scope: Option<String>,
        new_secret: String,
        now: u64,
        /// The application's `refresh_token_reuse_grace_secs`.
        grace: u64,
        reply: RpcReplyPort<Result<std::result::Result<FamilyRecord, GrantFailure>>>,
    },
    /// Whether an access token of the family is still good.
    Check {
        jti: Uuid,
        now: u64,
        reply: RpcReplyPort<Result<Option<FamilyRecord>>>,
    },
    /// Revokes the whole family (reuse, replay, RFC 7009 on a refresh token).
    Revoke(RpcReplyPort<Result<()>>),
    /// Revokes one access token of the family.
    RevokeAccess {
        jti: Uuid,
        exp: u64,
        reply: RpcReplyPort<Result<()>>,
    },
    /// Stop if idle.
    Passivate,
}

pub(crate) struct GrantState {
    ctx: Arc<Context>,
    id: String,
    respawn: bool,
    loaded: bool,
    record: Option<GrantRecord>,
    lease: Option<Lease>,
    leases_given: u64,
}

/// An OIDC-mode login's hold on an authorize request. The id makes sure that only the login
/// holding it can release or finish: one whose hold ran out cannot undo the next one's.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: u64,
    until: u64,
}

#[derive(Default)]
pub(crate) struct GrantActor;

impl Child for GrantActor {
    type Key = String;
    type Shared = Arc<Context>;

    fn args(shared: &Arc<Context>, key: &String, respawn: bool) -> GrantState {
        GrantState {
            ctx: shared.clone(),
            id: key.clone(),
            respawn,
            loaded: false,
            record: None,
            lease: None,
            leases_given: 0,
        }
    }

    fn passivate() -> GrantMsg {
        GrantMsg::Passivate
    }
}

impl Actor for GrantActor {
    type Msg = GrantMsg;
    type State = GrantState;
    type Arguments = GrantState;

    async fn pre_start(
        &self,
        _myself: ActorRef<GrantMsg>,
        args: GrantState,
    ) -> std::result::Result<GrantState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<GrantMsg>,
        msg: GrantMsg,
        state: &mut GrantState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        if let GrantMsg::Passivate = msg {
            myself.stop(None);
            return Ok(());
        }
        state.ensure_loaded().await?;

        match msg {
            GrantMsg::Create(record, reply) => {
                let _ = reply.send(state.put(*record).await);
            }
            GrantMsg::Claim {
                app,
                nonce,
                now,
                reply,
            } => {
                let _ = reply.send(state.claim(app, nonce.as_deref(), now));
            }
            GrantMsg::Release(lease) => {
                if state.holds(lease) {
                    state.lease = None;
                }
            }
            GrantMsg::Finish {
                lease,
                code_id,
                code,
                reply,
            } => {
                let _ = reply.send(state.finish(lease, &code_id, *code).await);
            }
            GrantMsg::Redeem(redemption, reply) => {
                let _ = reply.send(state.redeem(*redemption).await);
            }
            GrantMsg::Refresh {
                secret,
                client_id,
                scope,
                new_secret,
                now,
                grace,
                reply,
            } => {
                let asked = RefreshAsk {
                    secret: &secret,
                    client_id: &client_id,
                    scope: scope.as_deref(),
                    new_secret: &new_secret,
                    now,
                    grace,
                };
                let result = state.refresh(asked).await;
                let _ = reply.send(result);
            }
            GrantMsg::Check { jti, now, reply } => {
                let _ = reply.send(Ok(state.check(jti, now)));
            }
            GrantMsg::Revoke(reply) => {
                let _ = reply.send(state.revoke().await);
            }
            GrantMsg::RevokeAccess { jti, exp, reply } => {
                let _ = reply.send(state.revoke_access(jti, exp).await);
            }
            GrantMsg::Passivate => {}
        }
        Ok(())
    }
}

impl GrantState {
    async fn ensure_loaded(&mut self) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        if self.respawn {
            // A failed predecessor may have a write in the queue: wait for it to land.
            self.ctx.store.commit(Batch::new()).await?;
        }
        let store = self.ctx.store.clone();
        let id = self.id.clone();
        let record = tokio::task::spawn_blocking(move || {
            store.load::<GrantRecord>(Space::Grants, id.as_bytes())
        })
        .await
        .map_err(Error::internal)??;
        self.loaded = true;
        self.record = record;
        Ok(())
    }

    async fn put(&mut self, record: GrantRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(Space::Grants, self.id.as_bytes(), &record)?;
        self.ctx.store.commit(batch).await?;
        self.record = Some(record);
        Ok(())
    }

    fn claim(
        &mut self,
        app: Uuid,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<(AuthRequestRecord, u64)> {
        let Some(GrantRecord::Request(request)) = &self.record else {
            return Err(Error::OidcRequestDead);
        };
        let held = self.lease.is_some_and(|lease| lease.until > now);
        if request.used || request.deadline <= now || request.app != app || held {
            return Err(Error::OidcRequestDead);
        }
        if nonce.is_some_and(|n| Some(n) != request.nonce.as_deref()) {
            return Err(Error::OidcNonceMismatch);
        }
        self.leases_given += 1;
        let lease = Lease {
            id: self.leases_given,
            until: now + LEASE_SECS,
        };
        self.lease = Some(lease);
        Ok((request.clone(), lease.id))
    }

    fn holds(&self, lease: u64) -> bool {
        self.lease.is_some_and(|held| held.id == lease)
    }

    async fn finish(&mut self, lease: u64, code_id: &str, code: CodeRecord) -> Result<()> {
        let Some(GrantRecord::Request(request)) = &self.record else {
            return Err(Error::OidcRequestDead);
        };
        // Limitation: a login that loses its hold here (it ran past LEASE_SECS and another
        // login claimed the request) has already rotated its device's authKey, which the
        // refusal does not return; that device must be added again.
        if request.used || !self.holds(lease) {
            return Err(Error::OidcRequestDead);
        }
        let mut used = request.clone();
        used.used = true;

        let mut batch = Batch::new();
        batch.put(
            Space::Grants,
            self.id.as_bytes(),
            &GrantRecord::Request(used.clone()),
        )?;
        batch.put(
            Space::Grants,
            ids::code(code_id).as_bytes(),
            &GrantRecord::Code(code),
        )?;
        self.ctx.store.commit(batch).await?;
        self.record = Some(GrantRecord::Request(used));
        self.lease = None;
        Ok(())
    }

    async fn redeem(
        &mut self,
        r: Redemption,
    ) -> Result<std::result::Result<Exchanged, GrantFailure>> {
        let Some(GrantRecord::Code(code)) = &self.record else {
            return Ok(Err(GrantFailure::Invalid("unknown authorization code")));
        };
        let secrets = &self.ctx.secrets;
        if !secrets.verify(
            Purpose::OidcCode,
            r.secret.as_bytes(),
            Some(&code.secret_hash),
        ) {
            return Ok(Err(GrantFailure::Invalid("unknown authorization code")));
        }
        if code.family.is_some() {
            return Ok(Err(GrantFailure::Replayed {
                family: code.family.clone(),
            }));
        }
        if let Some(problem) = mismatch(code, &r) {
            return Ok(Err(GrantFailure::Invalid(problem)));
        }

        let family = FamilyRecord {
            app: code.request.app,
            client_id: code.request.client_id.clone(),
            user: code.user,
            scope: code.request.scope.clone(),
            auth_time: code.auth_time,
            amr: code.amr.clone(),
            current_hash: secrets.hash(Purpose::RefreshToken, r.refresh_secret.as_bytes()),
            previous_hashes: Vec::new(),
            generation: 0,
            revoked_jtis: Vec::new(),
            revoked: false,
            created: r.now,
            rotated_at: r.now,
            retried: false,
            deadline: r.family_deadline,
            session: code.session,
        };
        let mut used = code.clone();
        used.family = Some(r.family_id.clone());

        let mut batch = Batch::new();
        batch.put(
            Space::Grants,
            self.id.as_bytes(),
            &GrantRecord::Code(used.clone()),
        )?;
        batch.put(
            Space::Grants,
            ids::family(&r.family_id).as_bytes(),
            &GrantRecord::Family(family.clone()),
        )?;
        self.ctx.store.commit(batch).await?;
        self.record = Some(GrantRecord::Code(used.clone()));
        Ok(Ok(Exchanged {
            code: used,
            family_id: r.family_id,
            family,
        }))
    }

    async fn refresh(
        &mut self,
        ask: RefreshAsk<'_>,
    ) -> Result<std::result::Result<FamilyRecord, GrantFailure>> {
        let RefreshAsk {
            secret,
            client_id,
            scope,
            new_secret,
            now,
            grace,
        } = ask;
        let Some(GrantRecord::Family(family)) = &self.record else {
            return Ok(Err(GrantFailure::Invalid("unknown refresh token")));
        };
        if family.client_id != client_id {
            return Ok(Err(GrantFailure::Invalid(
                "the refresh token was issued to another client",
            )));
        }
        let secrets = &self.ctx.secrets;
        let current = secrets.verify(
            Purpose::RefreshToken,
            secret.as_bytes(),
            Some(&family.current_hash),
        );
        if !current {
            let hash = secrets.hash(Purpose::RefreshToken, secret.as_bytes());
            // The client retrying a refresh whose answer it never got: it presents the token
            // the last rotation replaced, soon after (whole seconds: the window is at least
            // `grace`). Opt-in, as a thief who is quick enough gets the same pass. Once only:
            // after a retry, the token the lost answer carried is a reuse like any other.
            let retry = !family.retried
                && now <= family.rotated_at.saturating_add(grace)
                && grace > 0
                && family
                    .previous_hashes
                    .last()
                    .is_some_and(|h| crate::crypto::same(h, &hash));
            let old = family
                .previous_hashes
                .iter()
                .any(|h| crate::crypto::same(h, &hash));
            if old && !retry && !family.revoked {
                self.revoke().await?;
                return Ok(Err(GrantFailure::Replayed { family: None }));
            }
            if !retry {
                return Ok(Err(GrantFailure::Invalid("unknown refresh token")));
            }
        }
        let retried = !current;
        if family.revoked || family.deadline <= now {
            return Ok(Err(GrantFailure::Invalid(
                "the refresh token is revoked or expired",
            )));
        }
        // Checked before the rotation, so that a refused request does not spend the token.
        if scope.is_some_and(|asked| !super::scope_within(asked, &family.scope)) {
            return Ok(Err(GrantFailure::Scope));
        }

        let mut next = family.clone();
        next.previous_hashes.push(next.current_hash.clone());
        if next.previous_hashes.len() > REMEMBERED_SECRETS {
            next.previous_hashes.remove(0);
        }
        next.current_hash = secrets.hash(Purpose::RefreshToken, new_secret.as_bytes());
        next.rotated_at = now;
        next.retried = retried;
        next.generation += 1;
        next.revoked_jtis.retain(|(_, exp)| *exp > now);
        self.put(GrantRecord::Family(next.clone())).await?;
        Ok(Ok(next))
    }

    fn check(&self, jti: Uuid, now: u64) -> Option<FamilyRecord> {
        match &self.record {
            Some(GrantRecord::Family(f))
                if !f.revoked
                    && f.deadline > now
                    && !f.revoked_jtis.iter().any(|(j, _)| *j == jti) =>
            {
                Some(f.clone())
            }
            _ => None,
        }
    }

    async fn revoke(&mut self) -> Result<()> {
        if let Some(GrantRecord::Family(f)) = &self.record
            && !f.revoked
        {
            let mut next = f.clone();
            next.revoked = true;
            self.put(GrantRecord::Family(next)).await?;
        }
        Ok(())
    }

    async fn revoke_access(&mut self, jti: Uuid, exp: u64) -> Result<()> {
        if let Some(GrantRecord::Family(f)) = &self.record
            && !f.revoked_jtis.iter().any(|(j, _)| *j == jti)
        {
            let mut next = f.clone();
            next.revoked_jtis.push((jti, exp));
            self.put(GrantRecord::Family(next)).await?;
        }
        Ok(())
    }
}

/// What a code exchange got wrong, if anything: the code is bound to its client, redirect
/// URI and PKCE challenge, and must still be within its minute.
fn mismatch(code: &CodeRecord, r: &Redemption) -> Option<&'static str> {
    if code.deadline <= r.now {
        return Some("the authorization code has expired");
    }
    if code.request.client_id != r.client_id {
        return Some("the authorization code was issued to another client");
    }
    match &r.redirect_uri {
        Some(uri) if *uri != code.request.redirect_uri => {
            return Some("redirect_uri differs from the authorization request's");
        }
        None if code.request.redirect_uri_given => return Some("redirect_uri is missing"),
        _ => {}
    }
    match (&code.request.code_challenge, &r.verifier) {
        (Some(challenge), Some(verifier)) => {
            if !super::pkce::verifier_matches(verifier, challenge) {
                return Some("code_verifier does not match the code challenge");
            }
        }
        (Some(_), None) => return Some("code_verifier is missing"),
        (None, Some(_)) => return Some("code_verifier sent for a request without a challenge"),
        (None, None) => {}
    }
    None
}
