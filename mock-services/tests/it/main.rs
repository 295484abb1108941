//! In-process tests of the mock services: each request goes through the full router.

mod auth;
mod recording;
mod scenario;
mod services;
mod slack;
mod support;
