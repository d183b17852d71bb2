//! `cargo xtask bench …`: every speed goal of the product as a benchmark that measures both
//! sides in one run and reports ratios (machines are shared and noisy; absolute times are
//! printed for context only).
//!
//! - [`startup::startup`]: cold start, warm restart and idle memory of `serve`.
//! - [`catalog::catalog`]: the tuned catalog against stock PostgreSQL for DuckLake's queries.
//! - [`maintenance::maintenance`]: our orphan scan against DuckDB's, and commit latency before
//!   and after the catalog garbage cleanup.
//! - [`clients::clients`]: 1,000 connections, 32 writers and a fresh client's ATTACH,
//!   through the pooler against directly.
//! - [`metrics::metrics`]: commit throughput with a 1 s `/metrics` scrape against none, and the
//!   scrape time at 50 lakes.
//! - [`durability::durability`]: RPO, archive write overhead and restore time on moto S3.
//! - `failover` (crate `xtask-bench-failover`, on these helpers): a primary and a hot standby.
//!
//! [`support`] holds what the benchmarks and xtask's container smoke test share (free ports,
//! `/readyz`, moto on loopback).

pub mod catalog;
pub mod clients;
pub mod durability;
pub mod maintenance;
pub mod metrics;
pub mod startup;
pub mod support;
