//! The bearer token every gRPC client of the tests and the load test sends.

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub String);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Ok(value) = format!("Bearer {}", self.0).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}
