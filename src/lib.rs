//! SwarmDirector: mail or a signed webhook in, a workflow of agents run, a threaded reply out.
//! See ARCHITECTURE.md for the data flow; each module below owns one part of it.

/// The `Agent` trait and the local agents.
pub mod agents;
/// Builds everything, binds the port, runs the workers, shuts down gracefully.
pub mod app;
/// The hash-chained audit log: records, verification, CSV export.
pub mod audit;
/// The command line's commands, one function each.
pub mod cli;
/// Typed settings from the environment; the only reader of env vars.
pub mod config;
/// Newtypes and enums: `EmailAddress`, `MessageId`, `TaskId`, statuses.
pub mod domain;
/// Every way mail gets in, ending in one `accept()`.
pub mod intake;
/// Parsing, guard, quote stripping, composing replies, transports.
pub mod mail;
/// Workflows and the task worker.
pub mod orchestrator;
/// Durable delivery of replies with retries.
pub mod outbox;
/// Read-only reports shared by the web pages, the API and the CLI.
pub mod reports;
/// Cron table of maintenance jobs.
pub mod scheduler;
/// Pools, migrations and all SQL.
pub mod store;
/// HTTP: status page, health, API, exports, inbound webhook.
pub mod web;
