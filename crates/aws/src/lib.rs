//! Everything the server asks of AWS itself, apart from S3 data (which `storage` reaches through
//! object_store with this crate's credentials):
//!
//! - [`identity`]: one region and one ordered credential chain ([`AwsContext`]) shared by S3,
//!   Secrets Manager and Marketplace, refreshed before expiry, and a signed bucket probe;
//! - [`secrets_manager`]: the admin password secret reference and `GetSecretValue`;
//! - [`marketplace`]: `RegisterUsage` at start for the paid container;
//! - [`iam`]: the least-privilege IAM policies of the server and its clients.
//!
//! It depends on no crate of ours but `base`, and takes its own settings
//! ([`marketplace::MarketplaceConfig`], [`identity::StaticKeys`]), never the whole configuration.

pub mod iam;
pub mod identity;
pub mod marketplace;
pub mod secrets_manager;

pub use identity::{AwsContext, AwsError, ResolvedRegion, S3Probe, StaticKeys};
