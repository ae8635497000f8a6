//! Keeping secrets out of `Debug` output, logs and error messages.

/// What a secret is shown as.
pub const REDACTED: &str = "***";

/// `url` with any password replaced by [`REDACTED`] (`postgres://app:***@db/x`), for messages.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:{REDACTED}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// An optional secret as shown in `Debug` output: whether it is set, never what it is.
pub fn option<T>(secret: &Option<T>) -> &'static str {
    if secret.is_some() { REDACTED } else { "None" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            url("postgres://app:hunter2@db:5432/tollgate?sslmode=require"),
            "postgres://app:***@db:5432/tollgate?sslmode=require"
        );
        assert_eq!(url("nats://token@nats:4222"), "nats://token:***@nats:4222");
        assert_eq!(url("sqlite:///data/usage.db"), "sqlite:///data/usage.db");
        assert_eq!(url("postgres://db/x"), "postgres://db/x");
        assert_eq!(url("not a url"), "not a url");
    }
}
