//! Usage in OpenAI's shape, as every translated provider reports it.

/// OpenAI's `usage` object for a translated provider. Prompt tokens include those read from
/// and written to the provider's cache; cache writes are also named apart (a Tollgate field
/// OpenAI clients ignore) so that they can be priced at their own rate.
pub fn usage_json(
    uncached_input: u64,
    cache_read: u64,
    cache_write: u64,
    output: u64,
) -> serde_json::Value {
    let prompt = uncached_input + cache_read + cache_write;
    let mut details = serde_json::json!({"cached_tokens": cache_read});
    if cache_write > 0 {
        details["cache_write_tokens"] = cache_write.into();
    }
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": details,
    })
}
