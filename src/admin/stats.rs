//! `/stats` (interim until the obs merge).

use super::server::Response;
use crate::runtime::control::Control;

pub fn text(_control: &Control, _query: &str) -> Response {
    Response::text(200, "")
}
