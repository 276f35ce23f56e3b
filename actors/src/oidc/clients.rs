//! OpenID Connect clients: each application's default client (client id = applicationUuid,
//! authenticated by the application's API key) and the clients registered beside it.
//!
//! Clients change only through the CLI while the server is stopped, so the registry is a map
//! read without a mailbox hop, like the applications.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use latchkey_storage::{Batch, Record, Space, Store, records::ClientRecord};
use uuid::Uuid;

use super::redirect;
use crate::{
    Error, Result,
    apps::Apps,
    crypto::{Purpose, Secrets},
};

/// How a token-endpoint caller says who it is. Its `Debug` shows the client ids only.
#[derive(Clone, Default)]
pub struct ClientAuth {
    /// From HTTP Basic, already form-url-decoded.
    pub basic: Option<(String, String)>,
    /// `client_id` from the form.
    pub client_id: Option<String>,
    /// `client_secret` from the form.
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("basic_id", &self.basic.as_ref().map(|(id, _)| id))
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Why client authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientAuthError {
    /// Two methods at once, or two client ids that differ.
    Malformed(&'static str),
    /// Unknown client or wrong secret.
    Failed,
}

#[derive(Debug, Default)]
pub(crate) struct Clients {
    by_id: RwLock<HashMap<String, Arc<ClientRecord>>>,
    /// Origins (`scheme://host[:port]`) of every registered redirect URI: the web pages that
    /// may call the token, userinfo and revocation endpoints from a browser.
    origins: RwLock<HashSet<String>>,
}

impl Clients {
    pub(crate) fn load(store: &Arc<dyn Store>) -> Result<Self> {
        let mut map = HashMap::new();
        for (_, bytes) in store.scan_prefix(Space::Clients, &[])? {
            let record = ClientRecord::decode(&bytes)?;
            map.insert(record.client_id.clone(), Arc::new(record));
        }
        let origins = origins_of(map.values());
        Ok(Self {
            by_id: RwLock::new(map),
            origins: RwLock::new(origins),
        })
    }

    /// Whether `origin` is the origin of a redirect URI some client registered.
    pub(crate) fn is_redirect_origin(&self, origin: &str) -> bool {
        self.origins
            .read()
            .is_ok_and(|origins| origins.contains(origin))
    }

    /// The client named `client_id`: a registered one, or an application's default client.
    pub(crate) fn get(&self, apps: &Apps, client_id: &str) -> Option<Arc<ClientRecord>> {
        if let Some(found) = self.by_id.read().ok()?.get(client_id) {
            return Some(found.clone());
        }
        let app = Uuid::parse_str(client_id).ok()?;
        // The hyphenated lower-case form only: another spelling is another client id.
        if app.to_string() != client_id {
            return None;
        }
        apps.get(app).map(|app| Arc::new(default_client(app.uuid)))
    }

    /// Registers a client; returns it with its secret (shown once, stored hashed).
    pub(crate) async fn create(
        &self,
        store: &Arc<dyn Store>,
        secrets: &Secrets,
        app: Uuid,
        redirect_uris: Vec<String>,
        public: bool,
        now: u64,
    ) -> Result<(Arc<ClientRecord>, Option<String>)> {
        check_uris(&redirect_uris)?;
        let secret = if public {
            None
        } else {
            Some(crate::crypto::random_secret()?)
        };
        let record = ClientRecord {
            client_id: Uuid::new_v4().to_string(),
            app,
            redirect_uris,
            secret_hash: secret
                .as_ref()
                .map(|s| secrets.hash(Purpose::ClientSecret, s.as_bytes())),
            public,
            created: now,
        };
        let record = self.store(store, record).await?;
        Ok((record, secret))
    }

    /// Replaces a client's redirect URIs (the default client's included).
    pub(crate) async fn update(
        &self,
        store: &Arc<dyn Store>,
        apps: &Apps,
        client_id: &str,
        redirect_uris: Vec<String>,
    ) -> Result<Arc<ClientRecord>> {
        check_uris(&redirect_uris)?;
        let client = self.get(apps, client_id).ok_or(Error::UnknownClient)?;
        let mut record = (*client).clone();
        record.redirect_uris = redirect_uris;
        self.store(store, record).await
    }

    /// Checks a caller's client authentication (RFC 6749 2.3): exactly one method; public
    /// clients name themselves and send no secret.
    pub(crate) fn authenticate(
        &self,
        apps: &Apps,
        secrets: &Secrets,
        auth: &ClientAuth,
    ) -> std::result::Result<Arc<ClientRecord>, ClientAuthError> {
        let (client_id, secret) = match (&auth.basic, &auth.client_secret) {
            (Some(_), Some(_)) => {
                return Err(ClientAuthError::Malformed(
                    "use one client authentication method, not two",
                ));
            }
            (Some((id, secret)), None) => {
                if auth.client_id.as_ref().is_some_and(|form_id| form_id != id) {
                    return Err(ClientAuthError::Malformed(
                        "client_id differs from the authenticated client",
                    ));
                }
                (id.as_str(), Some(secret.as_str()))
            }
            (None, secret) => match &auth.client_id {
                Some(id) => (id.as_str(), secret.as_deref()),
                // RFC 6749 5.2 counts a missing authentication as a failed one (401).
                None => return Err(ClientAuthError::Failed),
            },
        };

        let Some(client) = self.get(apps, client_id) else {
            // Spend the same hash an existing client would cost.
            let _ = secrets.verify(
                Purpose::ClientSecret,
                secret.unwrap_or_default().as_bytes(),
                None,
            );
            return Err(ClientAuthError::Failed);
        };
        // Some libraries send HTTP Basic with an empty password for a public client.
        let secret = secret.filter(|s| !(client.public && s.is_empty()));
        let good = match (client.public, secret) {
            (true, None) => true,
            (true, Some(_)) | (false, None) => false,
            (false, Some(secret)) => match &client.secret_hash {
                Some(hash) => secrets.verify(Purpose::ClientSecret, secret.as_bytes(), Some(hash)),
                None => apps
                    .get(client.app)
                    .is_some_and(|app| app.api_key_matches(secrets, secret)),
            },
        };
        if good {
            Ok(client)
        } else {
            Err(ClientAuthError::Failed)
        }
    }

    async fn store(
        &self,
        store: &Arc<dyn Store>,
        record: ClientRecord,
    ) -> Result<Arc<ClientRecord>> {
        let mut batch = Batch::new();
        batch.put(Space::Clients, record.client_id.as_bytes(), &record)?;
        store.commit(batch).await?;
        let record = Arc::new(record);
        if let Ok(mut map) = self.by_id.write() {
            map.insert(record.client_id.clone(), record.clone());
            let origins = origins_of(map.values());
            if let Ok(mut known) = self.origins.write() {
                *known = origins;
            }
        }
        Ok(record)
    }
}

/// The web origins of the clients' redirect URIs; custom schemes (apps) have none.
fn origins_of<'a>(clients: impl Iterator<Item = &'a Arc<ClientRecord>>) -> HashSet<String> {
    clients
        .flat_map(|client| client.redirect_uris.iter())
        .filter_map(|uri| url::Url::parse(uri).ok())
        .map(|url| url.origin())
        .filter(url::Origin::is_tuple)
        .map(|origin| origin.ascii_serialization())
        .collect()
}

/// An application's own client: confidential, authenticated by the API key.
fn default_client(app: Uuid) -> ClientRecord {
    ClientRecord {
        client_id: app.to_string(),
        app,
        redirect_uris: Vec::new(),
        secret_hash: None,
        public: false,
        created: 0,
    }
}

fn check_uris(uris: &[String]) -> Result<()> {
    if uris.len() > 32 {
        return Err(Error::InvalidField {
            field: "redirect_uri",
            reason: "at most 32 redirect URIs per client",
        });
    }
    uris.iter()
        .try_for_each(|uri| redirect::check_for_registration(uri))
}
