//! Console sessions: a random id in an HttpOnly, SameSite=Strict cookie (Secure under TLS)
//! names a session kept in memory, which holds the admin token it signed in with (the token never
//! reaches the page again), a CSRF token for the forms, and when it expires.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tollgate_policy::model::AdminRole;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "tollgate_console";
/// The longest a session lives, however active.
const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept at once (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// The admin token every change is made with, as the gRPC API would be called.
    pub token: String,
    /// Who signed in (the token's name) and as what.
    pub actor: String,
    pub role: AdminRole,
    /// Must come back with every change.
    pub csrf: String,
    /// A new key's secret, shown on the next page and then forgotten.
    pub flash_secret: Option<String>,
    started: Instant,
    last_seen: Instant,
}

/// Every open session.
pub struct Sessions {
    idle: Duration,
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Sessions that end after `idle` without a request (and after 12 hours in any case).
    pub fn new(idle: Duration) -> Self {
        Sessions {
            idle,
            open: Mutex::default(),
        }
    }

    /// Opens a session; returns its id (the cookie's value).
    pub fn open(&self, token: String, actor: String, role: AdminRole) -> String {
        let id = random_hex();
        let now = Instant::now();
        let session = Session {
            token,
            actor,
            role,
            csrf: random_hex(),
            flash_secret: None,
            started: now,
            last_seen: now,
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, s| !self.expired(s, now));
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), session);
        id
    }

    /// The live session the request's cookie names, refreshed; `None` when there is none or it
    /// expired (then it is forgotten).
    pub fn current(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE_NAME)?;
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let session = open.get_mut(id)?;
        if self.expired(session, now) {
            open.remove(id);
            return None;
        }
        session.last_seen = now;
        Some((id.to_owned(), session.clone()))
    }

    /// Takes the session's one-time secret.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get_mut(id)?.flash_secret.take()
    }

    /// Keeps `secret` for the session's next page.
    pub fn flash(&self, id: &str, secret: String) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = open.get_mut(id) {
            session.flash_secret = Some(secret);
        }
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(id);
    }

    fn expired(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) > self.idle
            || now.duration_since(session.started) > MAX_AGE
    }
}

impl Session {
    /// Whether `offered` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, offered: &str) -> bool {
        !offered.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(offered.as_bytes()))
    }
}

/// The `Set-Cookie` value that stores session `id` (`secure` under TLS).
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        MAX_AGE.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, value.parse().expect("cookie"));
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_idles_out() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let id = sessions.open("tga-x".into(), "ops".into(), AdminRole::Admin);
        let headers = with_cookie(&format!("other=1; {COOKIE_NAME}={id}"));
        let (_, session) = sessions.current(&headers).expect("open");
        assert!(session.csrf_matches(&session.csrf));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches("forged"));
        assert!(
            sessions
                .current(&with_cookie(&format!("{COOKIE_NAME}=guess")))
                .is_none()
        );
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.current(&headers).is_none(), "idle too long");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let cookie = set_cookie("abc", true);
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
    }
}
