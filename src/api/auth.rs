//! Who may use the job API: a bearer key compared in constant time. With
//! no key configured the API is open only on a loopback listener; on any
//! other address it refuses everything until `api.key` is set.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa::openapi::{self, Content, Object, Ref, RefOr, Type, header::HeaderBuilder};

use super::body::{ErrorBody, error};

/// The API's access rule.
#[derive(Clone)]
pub enum ApiAuth {
    /// Requests must carry `Authorization: Bearer <key>`.
    Key(SecretString),
    /// No key, loopback listener: anyone who can connect may submit.
    OpenOnLoopback,
    /// No key, non-loopback listener: nobody may.
    Closed,
}

impl ApiAuth {
    /// The rule for `key` (empty: none) on a listener at `loopback` or not.
    pub fn new(key: &SecretString, loopback: bool) -> Self {
        match (key.expose_secret().is_empty(), loopback) {
            (false, _) => ApiAuth::Key(key.clone()),
            (true, true) => ApiAuth::OpenOnLoopback,
            (true, false) => ApiAuth::Closed,
        }
    }

    /// `Err` is the 401 answer, saying why without echoing what was sent.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let expected = match self {
            ApiAuth::OpenOnLoopback => return Ok(()),
            ApiAuth::Closed => {
                return Err(Refused(
                    "the job API is disabled: api.key is not set and herald listens on a \
                     non-loopback address",
                ));
            }
            ApiAuth::Key(key) => key.expose_secret().as_bytes(),
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match presented {
            None => Err(Refused("missing `Authorization: Bearer <api key>` header")),
            Some(given) if bool::from(given.as_bytes().ct_eq(expected)) => Ok(()),
            Some(_) => Err(Refused("invalid API key")),
        }
    }
}

/// Why a request was refused; answers 401 with the reason.
#[derive(Debug)]
pub(crate) struct Refused(&'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = error(StatusCode::UNAUTHORIZED, self.0);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

/// The 401 answer in the OpenAPI document, shared by every job route.
impl<'r> utoipa::ToResponse<'r> for Refused {
    fn response() -> (&'r str, RefOr<openapi::Response>) {
        let challenge = HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::String)))
            .description(Some("`Bearer`"))
            .build();
        let response = openapi::ResponseBuilder::new()
            .description(
                "No `Authorization: Bearer <api.key>` header, a wrong key, or no key configured \
                 while herald listens on a non-loopback address; the reason says which.",
            )
            .header("WWW-Authenticate", challenge)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
            )
            .build();
        ("Unauthorized", response.into())
    }
}
