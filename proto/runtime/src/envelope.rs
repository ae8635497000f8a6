//! Envelope encryption of provider credentials. Each credential is sealed with a data key of
//! its own; the data key is kept only wrapped by a key encryption key (KEK): the local
//! `TOLLGATE_CREDENTIAL_KEY`, or a key in AWS KMS. Rotating the KEK re-wraps the data keys and
//! leaves every sealed credential as it is, so edges that already hold a data key keep using
//! it while the new wrapping reaches them.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tollgate_policy::model::Credential;
use tollgate_policy::sealing::SealingKey;

/// The longest a KMS call may take, connection included.
const KMS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a data key could not be wrapped or unwrapped. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("KMS: {0}")]
    Kms(String),
    #[error("the wrapped data key is malformed or was wrapped by another key")]
    Unwrappable,
    #[error("no key encryption key {0} is configured here")]
    UnknownKek(String),
    #[error("credential {0} has no envelope: the credential key itself sealed it")]
    NoEnvelope(String),
    #[error("the wrapped data key is not the one that sealed credential {0}")]
    Mismatch(String),
}

/// A credential's data key: only ever in memory, or wrapped.
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Self {
        DataKey(rand::random())
    }

    /// The key as credentials are sealed and opened with.
    pub fn sealing_key(&self) -> SealingKey {
        SealingKey::from_bytes(self.0)
    }

    /// This key, if it is the one that sealed `credential` (their fingerprints match).
    pub fn sealed(self, credential: &Credential) -> Result<DataKey, EnvelopeError> {
        if self.sealing_key().id() == credential.key_id {
            Ok(self)
        } else {
            Err(EnvelopeError::Mismatch(credential.id.clone()))
        }
    }
}

/// A key encryption key.
#[derive(Clone)]
pub enum Kek {
    /// A 32-byte key from configuration (`TOLLGATE_CREDENTIAL_KEY`).
    Local(SealingKey),
    /// A symmetric key in AWS KMS, called through `client`.
    Kms {
        client: aws_sdk_kms::Client,
        key_id: String,
    },
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

impl Kek {
    /// A KMS key, reached with the standard AWS configuration chain (region, credentials,
    /// `AWS_ENDPOINT_URL_KMS` for a private endpoint).
    pub async fn kms(key_id: &str) -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(KMS_TIMEOUT)
                    .operation_timeout(KMS_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        Kek::Kms {
            client: aws_sdk_kms::Client::new(&config),
            key_id: key_id.to_owned(),
        }
    }

    /// Names the key in a credential's envelope: `local:<fingerprint>` or `kms:<key id>`.
    pub fn id(&self) -> String {
        match self {
            Kek::Local(key) => format!("local:{}", key.id()),
            Kek::Kms { key_id, .. } => format!("kms:{key_id}"),
        }
    }

    /// `data_key`, wrapped.
    pub async fn wrap(&self, data_key: &DataKey) -> Result<String, EnvelopeError> {
        match self {
            Kek::Local(key) => Ok(key.seal(rand::random(), &data_key.0)),
            Kek::Kms { client, key_id } => {
                let wrapped = client
                    .encrypt()
                    .key_id(key_id)
                    .plaintext(Blob::new(data_key.0.to_vec()))
                    .send()
                    .await
                    .map_err(|e| EnvelopeError::Kms(error_message(&e)))?;
                let blob = wrapped
                    .ciphertext_blob()
                    .ok_or_else(|| EnvelopeError::Kms("Encrypt answered no ciphertext".into()))?;
                Ok(BASE64.encode(blob.as_ref()))
            }
        }
    }

    /// The data key `wrapped` holds.
    pub async fn unwrap(&self, wrapped: &str) -> Result<DataKey, EnvelopeError> {
        let Kek::Kms { client, key_id } = self else {
            return self.unwrap_local(wrapped);
        };
        let blob = BASE64
            .decode(wrapped)
            .map_err(|_| EnvelopeError::Unwrappable)?;
        let opened = client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(blob))
            .send()
            .await
            .map_err(|e| EnvelopeError::Kms(error_message(&e)))?;
        data_key(opened.plaintext().map(|p| p.as_ref().to_vec()))
    }

    /// The data key `wrapped` holds, without a network call: only a local key can.
    pub fn unwrap_local(&self, wrapped: &str) -> Result<DataKey, EnvelopeError> {
        match self {
            Kek::Local(key) => data_key(key.open(wrapped).ok()),
            Kek::Kms { .. } => Err(EnvelopeError::Kms(
                "a KMS key unwraps only through KMS".to_owned(),
            )),
        }
    }
}

fn data_key(bytes: Option<Vec<u8>>) -> Result<DataKey, EnvelopeError> {
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(DataKey)
        .ok_or(EnvelopeError::Unwrappable)
}

/// The KEKs a role holds: the one new data keys are wrapped with, and during a rotation the
/// one it replaces.
#[derive(Clone, Debug)]
pub struct Keks {
    pub current: Kek,
    pub previous: Option<Kek>,
}

impl Keks {
    /// The KEK named `id`, if held.
    pub fn find(&self, id: &str) -> Result<&Kek, EnvelopeError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|kek| kek.id() == id)
            .ok_or_else(|| EnvelopeError::UnknownKek(id.to_owned()))
    }

    /// The data key of `credential`, unwrapped by the KEK its envelope names and checked
    /// against the credential.
    pub async fn data_key(&self, credential: &Credential) -> Result<DataKey, EnvelopeError> {
        let envelope = credential
            .envelope
            .as_ref()
            .ok_or_else(|| EnvelopeError::NoEnvelope(credential.id.clone()))?;
        self.find(&envelope.kek)?
            .unwrap(&envelope.wrapped_key)
            .await?
            .sealed(credential)
    }
}

/// Where a role's KEKs come from, beside its `TOLLGATE_CREDENTIAL_KEY`.
#[derive(Clone, Debug, Default)]
pub struct KekSettings {
    /// `TOLLGATE_KMS_KEY_ID`: the AWS KMS key (id, ARN or alias) that wraps data keys.
    pub kms_key_id: Option<String>,
    /// `TOLLGATE_KMS_KEY_ID_PREVIOUS`: while rotating, the KMS key being replaced.
    pub kms_previous: Option<String>,
    /// `TOLLGATE_CREDENTIAL_KEY_PREVIOUS`: while rotating, the local key being replaced.
    pub local_previous: Option<SealingKey>,
}

impl KekSettings {
    /// Reads the settings through `get`; `Err` names the setting that is unusable.
    pub fn from_settings(get: impl Fn(&str) -> Option<String>) -> Result<Self, &'static str> {
        Ok(KekSettings {
            kms_key_id: get("TOLLGATE_KMS_KEY_ID"),
            kms_previous: get("TOLLGATE_KMS_KEY_ID_PREVIOUS"),
            local_previous: get("TOLLGATE_CREDENTIAL_KEY_PREVIOUS")
                .map(|k| SealingKey::from_base64(&k))
                .transpose()
                .map_err(|_| "TOLLGATE_CREDENTIAL_KEY_PREVIOUS")?,
        })
    }

    /// The KEKs, given the role's local credential key: KMS when a key id is set, else the
    /// local key; the previous one is the one named as previous, or the local key while
    /// moving from it to KMS. `None` when there is no key at all.
    pub async fn keks(&self, local: Option<&SealingKey>) -> Option<Keks> {
        let current = match (&self.kms_key_id, local) {
            (Some(id), _) => Kek::kms(id).await,
            (None, Some(key)) => Kek::Local(key.clone()),
            (None, None) => return None,
        };
        let previous = match (&self.kms_previous, &self.local_previous) {
            (Some(id), _) => Some(Kek::kms(id).await),
            (None, Some(key)) => Some(Kek::Local(key.clone())),
            (None, None) => match (&current, local) {
                (Kek::Kms { .. }, Some(key)) => Some(Kek::Local(key.clone())),
                _ => None,
            },
        };
        Some(Keks { current, previous })
    }
}

/// A KMS failure in words: the service's error code and message, or what stopped the call.
fn error_message<E, R>(error: &aws_sdk_kms::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(e) => format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or("no message")
        ),
        None => aws_sdk_kms::error::DisplayErrorContext(error).to_string(),
    }
}
