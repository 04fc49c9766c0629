//! Version 1 of the public API.

pub mod callbacks;
pub mod events;
pub mod messages;
pub mod send;
pub mod stream;
pub mod webhooks;

use actix_web::web;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(messages::routes)
        .configure(events::routes)
        .configure(webhooks::routes)
        .configure(stream::routes)
        .configure(callbacks::routes);
}
