//! Keeping secrets out of `Debug` output, logs and error messages.

/// What a secret is shown as.
pub const REDACTED: &str = "***";

/// `url` with any password replaced by [`REDACTED`] (`postgres://app:***@db/x`), for messages.
/// Userinfo without a password is a token (`nats://<token>@nats:4222`) and is hidden whole.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}{path}"),
            None => format!("{scheme}://{REDACTED}@{host}{path}"),
        },
        None => url.to_owned(),
    }
}

/// A secret (a token, a password, a key's seed, a URL that is itself a credential): `Debug`
/// shows [`REDACTED`], so a struct holding one derives `Debug` and still never prints it. It has
/// no `==` on purpose: secrets are compared as hashes, in constant time, where they are checked.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret(secret.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A URL that may carry a password or token (`postgres://app:pw@db/x`): `Debug` shows it with
/// them as [`REDACTED`] (see [`url`]), which keeps the host for whoever reads the log.
#[derive(Clone, Default)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    /// The URL itself, password included, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl<T: Into<Secret>> From<T> for SecretUrl {
    fn from(url: T) -> Self {
        SecretUrl(url.into())
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&url(self.expose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_show_only_that_they_are_set() {
        let token = Some(Secret::from("hunter2"));
        assert_eq!(format!("{token:?}"), "Some(***)");
        let database = SecretUrl::from("postgres://app:hunter2@db/x");
        assert_eq!(format!("{database:?}"), "postgres://app:***@db/x");
        assert_eq!(database.expose(), "postgres://app:hunter2@db/x");
    }

    #[test]
    fn passwords_and_tokens_in_urls_are_redacted() {
        for (given, shown) in [
            (
                "postgres://app:hunter2@db:5432/tollgate?sslmode=require",
                "postgres://app:***@db:5432/tollgate?sslmode=require",
            ),
            ("nats://s3cr3t-token@nats:4222", "nats://***@nats:4222"),
            ("sqlite:///data/usage.db", "sqlite:///data/usage.db"),
            ("postgres://db/x", "postgres://db/x"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(url(given), shown);
        }
    }
}
