//! [`Chaos`] as an admin part: its `/status` section and
//! `POST /chaos/resolve` (follow the latest report link now, answer what
//! the factory said). Register it in the admin state's parts.

use http::StatusCode;

use crate::admin::{ActionAnswer, ActionFuture, AdminPart};
use crate::chaos::ResolveResult;
use crate::chaos::handle::{Chaos, ResolveNowError};

/// The admin action path.
pub const RESOLVE_PATH: &str = "/chaos/resolve";

impl AdminPart for Chaos {
    fn name(&self) -> &'static str {
        "chaos"
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or_else(
            |e| serde_json::json!({"message": format!("cannot render the chaos status: {e}")}),
        )
    }

    fn actions(&self) -> &'static [&'static str] {
        &[RESOLVE_PATH]
    }

    fn action<'a>(&'a self, path: &'a str) -> ActionFuture<'a> {
        Box::pin(async move {
            if path != RESOLVE_PATH {
                return ActionAnswer {
                    status: StatusCode::NOT_FOUND,
                    body: serde_json::json!({"message": "unknown admin action"}),
                };
            }
            match self.resolve_now().await {
                Ok(done) => ActionAnswer {
                    // The factory could not be asked or answered nonsense: a bad gateway.
                    status: if done.answer.result == ResolveResult::Error {
                        StatusCode::BAD_GATEWAY
                    } else {
                        StatusCode::OK
                    },
                    body: serde_json::to_value(&done).unwrap_or_default(),
                },
                Err(e @ ResolveNowError::NoLink) => ActionAnswer {
                    status: StatusCode::CONFLICT,
                    body: serde_json::json!({"message": e.to_string()}),
                },
                Err(e @ ResolveNowError::NotAttached) => ActionAnswer {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: serde_json::json!({"message": e.to_string()}),
                },
            }
        })
    }
}
