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

    pub(crate) fn count(&self) -> usize {
        self.by_uuid.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Loads every stored application, giving each a current key of its configured algorithm
    /// (generated and stored now if the algorithm changed or it has none).
    pub(crate) async fn load_all(&self, store: &Arc<dyn Store>, now: u64) -> Result<()> {
        let apps = store.scan_prefix(Space::Apps, &[])?;
        for (_, bytes) in apps {
            let record = <AppRecord as latchkey_storage::Record>::decode(&bytes)?;
            let keys = store
                .scan_prefix(Space::Keys, record.uuid.as_bytes())?
                .into_iter()
                .map(|(_, v)| <KeyRecord as latchkey_storage::Record>::decode(&v))
                .collect::<latchkey_storage::Result<Vec<_>>>()?;
            self.install(store, record, keys, now).await?;
        }
        Ok(())
    }

    /// Creates an application and returns it with its API key (shown once, stored hashed).
    pub(crate) async fn create(
        &self,
        store: &Arc<dyn Store>,
        secrets: &Secrets,
        name: &str,
        now: u64,
    ) -> Result<(Arc<Application>, String)> {
        let api_key = crate::crypto::random_secret()?;
        let record = AppRecord {
            uuid: Uuid::new_v4(),
            name: name.to_owned(),
            api_key_hash: secrets.hash(Purpose::ApiKey, api_key.as_bytes()),
            created: now,
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
        let wanted = settings.jwt_algorithm.name();

        let has_current = keys.iter().any(|k| k.current && k.alg == wanted);
        if !has_current {
            let fresh = SigningKey::generate(record.uuid, settings.jwt_algorithm, now)?;
            let mut batch = Batch::new();
            for old in keys.iter_mut().filter(|k| k.current) {
                old.current = false;
                batch.put(
                    Space::Keys,
                    latchkey_storage::uuid_str_key(old.app, &old.kid),
                    &*old,
                )?;
            }
            batch.put(
                Space::Keys,
                latchkey_storage::uuid_str_key(fresh.app, &fresh.kid),
                &fresh,
            )?;
            store.commit(batch).await?;
            keys.push(fresh);
        }

        let parsed = keys
            .iter()
            .map(|k| Ok((k.current, Arc::new(SigningKey::from_record(k)?))))
            .collect::<Result<Vec<_>>>()?;
        let current = parsed
            .iter()
            .find(|(cur, k)| *cur && k.alg.name() == wanted)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| Error::Internal("no current signing key".into()))?;
        let all: Vec<_> = parsed.into_iter().map(|(_, k)| k).collect();

        let app = Arc::new(Application {
            uuid: record.uuid,
            name: record.name,
            issuer: format!(
                "{}/authenticate/v1-2/openid/{}",
                self.public_url, record.uuid
            ),
            settings,
            keys: KeyRing::new(record.uuid, current, all.clone()),
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
