//! A local stand-in for AWS KMS that speaks its wire protocol (JSON 1.1 over HTTP POST, the
//! operation in `X-Amz-Target: TrentService.<Operation>`), for the real `aws-sdk-kms` client
//! pointed at it with an endpoint override. It implements `Encrypt` and `Decrypt` for
//! symmetric keys; a ciphertext names its key, as real KMS ciphertexts do, so `Decrypt` needs
//! no `KeyId`. Keys can be disabled, as an operator retiring a key would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde_json::{Value, json};

use crate::fake_server::{Fake, lock};

const MAGIC: &[u8] = b"fkms";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "111122223333";

/// What the fake KMS keeps: its keys and what it was asked.
#[derive(Default)]
pub struct KmsState {
    /// Key id → key material.
    keys: Mutex<BTreeMap<String, [u8; 32]>>,
    disabled: Mutex<BTreeSet<String>>,
    encrypts: AtomicUsize,
    decrypts: AtomicUsize,
}

/// A running fake KMS; it stops serving when dropped.
pub type FakeKms = Fake<KmsState>;

impl FakeKms {
    /// Starts serving on a random port of 127.0.0.1, with no keys.
    pub async fn start() -> anyhow::Result<FakeKms> {
        Fake::serve(Router::new().route("/", post(operation))).await
    }

    /// The endpoint to give the SDK (`endpoint_url`, or `AWS_ENDPOINT_URL_KMS`).
    pub fn endpoint(&self) -> String {
        self.url()
    }

    /// Creates a symmetric key and returns its id (a UUID, as KMS gives).
    pub fn create_key(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut material = [0u8; 32];
        material[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        material[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        lock(&self.shared().keys).insert(id.clone(), material);
        id
    }

    /// Refuses every operation with `key_id` from now on (`DisabledException`).
    pub fn disable(&self, key_id: &str) {
        lock(&self.shared().disabled).insert(key_id.to_owned());
    }

    /// How many `Decrypt` calls were answered (successfully or not).
    pub fn decrypts(&self) -> usize {
        self.shared().decrypts.load(Ordering::SeqCst)
    }

    /// How many `Encrypt` calls were answered (successfully or not).
    pub fn encrypts(&self) -> usize {
        self.shared().encrypts.load(Ordering::SeqCst)
    }
}

fn arn(key_id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
}

/// A JSON 1.1 error, as KMS sends it.
fn error(kind: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amzn-errortype", kind),
        ],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn operation(
    State(shared): State<Arc<KmsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !headers.contains_key("authorization") {
        return error(
            "MissingAuthenticationTokenException",
            "request is not signed",
        );
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error("SerializationException", "body is not JSON");
    };
    match target {
        "TrentService.Encrypt" => {
            shared.encrypts.fetch_add(1, Ordering::SeqCst);
            encrypt(&shared, &request)
        }
        "TrentService.Decrypt" => {
            shared.decrypts.fetch_add(1, Ordering::SeqCst);
            decrypt(&shared, &request)
        }
        other => error(
            "UnknownOperationException",
            &format!("{other} is not implemented by the fake"),
        ),
    }
}

/// The key `id` names (a key id, or its ARN), usable; else the error to answer.
fn usable_key(shared: &KmsState, id: &str) -> Result<(String, [u8; 32]), (&'static str, String)> {
    let id = id.rsplit('/').next().unwrap_or(id).to_owned();
    let material = lock(&shared.keys).get(&id).copied().ok_or_else(|| {
        (
            "NotFoundException",
            format!("Key '{}' does not exist", arn(&id)),
        )
    })?;
    if lock(&shared.disabled).contains(&id) {
        return Err(("DisabledException", format!("{} is disabled.", arn(&id))));
    }
    Ok((id, material))
}

fn encrypt(shared: &KmsState, request: &Value) -> Response {
    let key_id = request["KeyId"].as_str().unwrap_or_default();
    let Some(plaintext) = request["Plaintext"]
        .as_str()
        .and_then(|p| BASE64.decode(p).ok())
    else {
        return error("ValidationException", "Plaintext must be base64");
    };
    let (id, material) = match usable_key(shared, key_id) {
        Ok(key) => key,
        Err((kind, message)) => return error(kind, &message),
    };
    let nonce: [u8; 12] = *uuid::Uuid::new_v4()
        .as_bytes()
        .first_chunk()
        .unwrap_or(&[0; 12]);
    let Ok(sealed) = ChaCha20Poly1305::new(Key::from_slice(&material))
        .encrypt(Nonce::from_slice(&nonce), plaintext.as_slice())
    else {
        return error("KMSInternalException", "encryption failed");
    };
    let mut blob = MAGIC.to_vec();
    blob.push(id.len() as u8);
    blob.extend_from_slice(id.as_bytes());
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&sealed);
    ok(json!({
        "CiphertextBlob": BASE64.encode(blob),
        "KeyId": arn(&id),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

fn decrypt(shared: &KmsState, request: &Value) -> Response {
    let invalid = || error("InvalidCiphertextException", "");
    let Some(blob) = request["CiphertextBlob"]
        .as_str()
        .and_then(|b| BASE64.decode(b).ok())
    else {
        return invalid();
    };
    let Some(rest) = blob.strip_prefix(MAGIC) else {
        return invalid();
    };
    let Some((&len, rest)) = rest.split_first() else {
        return invalid();
    };
    if rest.len() < len as usize + 12 {
        return invalid();
    }
    let (id, rest) = rest.split_at(len as usize);
    let (nonce, sealed) = rest.split_at(12);
    let id = String::from_utf8_lossy(id).into_owned();
    if let Some(asked) = request["KeyId"].as_str()
        && asked.rsplit('/').next() != Some(id.as_str())
    {
        return error(
            "IncorrectKeyException",
            "the ciphertext was not encrypted with that key",
        );
    }
    let (id, material) = match usable_key(shared, &id) {
        Ok(key) => key,
        Err((kind, message)) => return error(kind, &message),
    };
    match ChaCha20Poly1305::new(Key::from_slice(&material))
        .decrypt(Nonce::from_slice(nonce), sealed)
    {
        Ok(plaintext) => ok(json!({
            "Plaintext": BASE64.encode(plaintext),
            "KeyId": arn(&id),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        })),
        Err(_) => invalid(),
    }
}
