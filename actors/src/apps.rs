//! Applications: tenants with their own users, API key, settings and key ring.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use latchkey_storage::{
    Batch, Space, Store,
    records::{AppRecord, KeyRecord},
};
use uuid::Uuid;

use crate::{
    AppSettings, Error, KeyRing, Result,
    crypto::{Purpose, Secrets},
    keyring::SigningKey,
};

/// One application as the engine serves it.
#[derive(Debug)]
pub struct Application {
    /// The applicationUuid.
    pub uuid: Uuid,
    /// Display name.
    pub name: String,
    /// Resolved settings.
    pub settings: AppSettings,
    /// Signing keys.
    pub keys: KeyRing,
    /// `iss` of its tokens.
    pub issuer: String,
    /// Whether the built-in login page may sign new users up.
    pub open_signup: bool,
    api_key_hash: Vec<u8>,
}

impl Application {
    /// Whether `key` is this application's API key (constant time).
    pub(crate) fn api_key_matches(&self, secrets: &Secrets, key: &str) -> bool {
        secrets.verify(Purpose::ApiKey, key.as_bytes(), Some(&self.api_key_hash))
    }
}

/// Settings for every application: defaults, and overrides by applicationUuid.
#[derive(Debug, Clone, Default)]
pub struct SettingsTable {
    /// For applications without their own section.
    pub defaults: AppSettings,
    /// Per application.
    pub per_app: HashMap<Uuid, AppSettings>,
}

impl SettingsTable {
    fn for_app(&self, app: Uuid) -> AppSettings {
        self.per_app
            .get(&app)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }
}

/// ID tokens are RS256, the one algorithm every OpenID Connect relying party must accept.
const ID_TOKEN_ALGORITHM: crate::JwtAlgorithm = crate::JwtAlgorithm::RS256;

type KidIndex = HashMap<String, (Arc<Application>, Arc<SigningKey>)>;

/// The registry of applications, read on every request without a mailbox hop.
#[derive(Debug)]
pub(crate) struct Apps {
    by_uuid: RwLock<HashMap<Uuid, Arc<Application>>>,
    by_kid: RwLock<KidIndex>,
    settings: SettingsTable,
    public_url: String,
}

impl Apps {
    pub(crate) fn new(settings: SettingsTable, public_url: &str) -> Self {
        Self {
            by_uuid: RwLock::default(),
            by_kid: RwLock::default(),
            settings,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    pub(crate) fn get(&self, uuid: Uuid) -> Option<Arc<Application>> {
        self.by_uuid.read().ok()?.get(&uuid).cloned()
    }

    pub(crate) fn by_kid(&self, kid: &str) -> Option<(Arc<Application>, Arc<SigningKey>)> {
        self.by_kid.read().ok()?.get(kid).cloned()
    }

    /// The public base URL, without a trailing slash.
    pub(crate) fn public_url(&self) -> &str {
        &self.public_url
    }

    pub(crate) fn count(&self) -> usize {
        self.by_uuid.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Loads every stored application, giving each a current key of its configured algorithm
    /// (generated and stored now if the algorithm changed or it has none).
    pub(crate) async fn load_all(&self, store: &Arc<dyn Store>, now: u64) -> Result<()> {
        let apps = store.scan_prefix(Space::Apps, &[])?;
        for (_, bytes) in apps {
            let record = <AppRecord as latchkey_storage::Record>::decode(&bytes)?;
            let keys = stored_keys(store, record.uuid)?;
            self.install(store, record, keys, now).await?;
        }
        Ok(())
    }

    /// Retires an application's current keys and makes new ones current. Retired keys keep
    /// verifying, and stay in the JWKS, until every token they signed has expired.
    pub(crate) async fn rotate(
        &self,
        store: &Arc<dyn Store>,
        uuid: Uuid,
        now: u64,
    ) -> Result<Arc<Application>> {
        let record = store
            .get(Space::Apps, uuid.as_bytes())?
            .map(|bytes| <AppRecord as latchkey_storage::Record>::decode(&bytes))
            .transpose()?
            .ok_or(Error::UnknownApp)?;
        let mut keys = stored_keys(store, uuid)?;

        let mut batch = Batch::new();
        for key in keys.iter_mut().filter(|k| k.current) {
            key.current = false;
            key.retired = Some(now);
            batch.put(
                Space::Keys,
                latchkey_storage::uuid_str_key(key.app, &key.kid),
                &*key,
            )?;
        }
        store.commit(batch).await?;
        self.install(store, record, keys, now).await
    }

    /// Creates an application and returns it with its API key (shown once, stored hashed).
    pub(crate) async fn create(
        &self,
        store: &Arc<dyn Store>,
        secrets: &Secrets,
        name: &str,
        open_signup: bool,
        now: u64,
    ) -> Result<(Arc<Application>, String)> {
        let api_key = crate::crypto::random_secret()?;
        let record = AppRecord {
            uuid: Uuid::new_v4(),
            name: name.to_owned(),
            api_key_hash: secrets.hash(Purpose::ApiKey, api_key.as_bytes()),
            created: now,
            open_signup,
        };
        let mut batch = Batch::new();
        batch.put(Space::Apps, record.uuid.as_bytes().to_vec(), &record)?;
        store.commit(batch).await?;
        let app = self.install(store, record, Vec::new(), now).await?;
        Ok((app, api_key))
    }

    async fn install(
        &self,
        store: &Arc<dyn Store>,
        record: AppRecord,
        mut keys: Vec<KeyRecord>,
        now: u64,
    ) -> Result<Arc<Application>> {
        let settings = self.settings.for_app(record.uuid);
        let access_alg = settings.jwt_algorithm;
        let wanted = [access_alg, ID_TOKEN_ALGORITHM];
        let keep = settings.key_keep_secs();
        let mut batch = Batch::new();

        // Keys retired long enough ago that nothing they signed is still valid go away.
        keys.retain(|k| {
            let expired = k.retired.is_some_and(|at| at.saturating_add(keep) <= now);
            if expired {
                batch.delete(Space::Keys, latchkey_storage::uuid_str_key(k.app, &k.kid));
            }
            !expired
        });
        // A key of an algorithm no longer configured stops signing but keeps verifying.
        for old in keys
            .iter_mut()
            .filter(|k| k.current && !wanted.iter().any(|a| a.name() == k.alg))
        {
            old.current = false;
            old.retired = Some(now);
            batch.put(
                Space::Keys,
                latchkey_storage::uuid_str_key(old.app, &old.kid),
                &*old,
            )?;
        }
        for alg in wanted {
            if !keys.iter().any(|k| k.current && k.alg == alg.name()) {
                let fresh = SigningKey::generate(record.uuid, alg, now)?;
                batch.put(
                    Space::Keys,
                    latchkey_storage::uuid_str_key(fresh.app, &fresh.kid),
                    &fresh,
                )?;
                keys.push(fresh);
            }
        }
        if !batch.is_empty() {
            store.commit(batch).await?;
        }

        // The order a restart's scan gives, so that the JWKS reads the same before and after.
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let parsed = keys
            .iter()
            .map(|k| Ok((k.current, Arc::new(SigningKey::from_record(k)?))))
            .collect::<Result<Vec<_>>>()?;
        let current_of = |alg: crate::JwtAlgorithm| {
            parsed
                .iter()
                .find(|(cur, k)| *cur && k.alg == alg)
                .map(|(_, k)| k.clone())
                .ok_or_else(|| Error::Internal("no current signing key".into()))
        };
        let current = current_of(access_alg)?;
        let id_token = current_of(ID_TOKEN_ALGORITHM)?;
        let all: Vec<_> = parsed.iter().map(|(_, k)| k.clone()).collect();

        let app = Arc::new(Application {
            uuid: record.uuid,
            name: record.name,
            issuer: format!(
                "{}/authenticate/v1-2/openid/{}",
                self.public_url, record.uuid
            ),
            open_signup: settings.open_signup.unwrap_or(record.open_signup),
            settings,
            keys: KeyRing::new(record.uuid, current, id_token, all.clone()),
            api_key_hash: record.api_key_hash,
        });
        if let Ok(mut by_kid) = self.by_kid.write() {
            for key in all {
                by_kid.insert(key.kid.clone(), (app.clone(), key));
            }
        }
        if let Ok(mut by_uuid) = self.by_uuid.write() {
            by_uuid.insert(app.uuid, app.clone());
        }
        Ok(app)
    }
}

fn stored_keys(store: &Arc<dyn Store>, app: Uuid) -> Result<Vec<KeyRecord>> {
    Ok(store
        .scan_prefix(Space::Keys, app.as_bytes())?
        .into_iter()
        .map(|(_, v)| <KeyRecord as latchkey_storage::Record>::decode(&v))
        .collect::<latchkey_storage::Result<Vec<_>>>()?)
}
