//! AWS Marketplace metering for the paid container product: `RegisterUsage` once at start,
//! before anything is served. AWS requires a paid container to stop when the customer is not
//! entitled; transient failures (throttling, AWS-side errors, network) are retried with backoff.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::{AwsContext, AwsError};

use crate::secrets_manager::sdk_detail;

/// Attempts before a transient failure stops the start (about 30 s of backoff in all).
const ATTEMPTS: u32 = 6;

/// Why metering refused the start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeteringError {
    #[error("AWS Marketplace: this AWS account is not subscribed to product {product_code} ({code}); subscribe in AWS Marketplace, then start the task again")]
    NotEntitled { product_code: String, code: String },
    #[error("AWS Marketplace rejected marketplace.product_code `{product_code}` or marketplace.public_key_version {public_key_version} ({code}: {detail}); use the values from the product's usage instructions")]
    InvalidProduct {
        product_code: String,
        public_key_version: i32,
        code: String,
        detail: String,
    },
    #[error("AWS Marketplace: RegisterUsage is not supported here ({code}: {detail}); paid container products run on Amazon ECS, EKS or Fargate in a supported region")]
    Platform { code: String, detail: String },
    #[error("AWS Marketplace: RegisterUsage was denied ({detail}); grant aws-marketplace:RegisterUsage to the task role")]
    AccessDenied { detail: String },
    #[error("AWS Marketplace: RegisterUsage failed {attempts} times, last: {detail}; check the network path to metering.marketplace.{region}.amazonaws.com")]
    Unavailable {
        attempts: u32,
        region: String,
        detail: String,
    },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// `[marketplace]`: this crate's settings slice.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketplaceConfig {
    /// The AWS Marketplace product code. When set, `RegisterUsage` is called at start and the
    /// server does not start unless the account is entitled. Unset: nothing is called.
    pub product_code: Option<String>,
    /// The public key version from the product's metering instructions.
    pub public_key_version: i32,
}

impl Default for MarketplaceConfig {
    fn default() -> Self {
        MarketplaceConfig {
            product_code: None,
            public_key_version: 1,
        }
    }
}

/// What a successful registration returned.
#[derive(Debug, Clone)]
pub struct Registration {
    pub product_code: String,
    /// The signed token AWS returns; its presence is the proof of entitlement.
    pub signature_len: usize,
    pub attempts: u32,
}

/// Calls `RegisterUsage`, retrying transient failures; returns `Ok(None)` when no product code
/// is configured (nothing is called then).
pub async fn register(
    aws: Option<&AwsContext>,
    config: &MarketplaceConfig,
) -> Result<Option<Registration>, MeteringError> {
    let Some(product_code) = config.product_code.as_deref() else {
        return Ok(None);
    };
    let aws = aws.expect("an AWS context is prepared whenever marketplace.product_code is set");
    aws.credentials().await?;
    // One send is one attempt: this loop retries, each time with a fresh nonce.
    let conf = aws_sdk_marketplacemetering::config::Builder::from(aws.sdk_config().await)
        .retry_config(aws_sdk_marketplacemetering::config::retry::RetryConfig::disabled())
        .build();
    let client = aws_sdk_marketplacemetering::Client::from_conf(conf);
    let mut delay = Duration::from_secs(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .register_usage()
            .product_code(product_code)
            .public_key_version(config.public_key_version)
            .nonce(uuid::Uuid::new_v4().to_string())
            .send()
            .await;
        let failure = match result {
            Ok(out) => {
                let reg = Registration {
                    product_code: product_code.to_owned(),
                    signature_len: out.signature().map_or(0, str::len),
                    attempts: attempt,
                };
                tracing::info!(
                    product_code,
                    attempts = attempt,
                    "AWS Marketplace: usage registered"
                );
                return Ok(Some(reg));
            }
            Err(e) => classify(e, product_code, config.public_key_version),
        };
        match failure {
            Err(fatal) => return Err(fatal),
            Ok(detail) if attempt >= ATTEMPTS => {
                return Err(MeteringError::Unavailable {
                    attempts: attempt,
                    region: aws.region().to_owned(),
                    detail,
                })
            }
            Ok(detail) => {
                tracing::warn!(attempt, %detail, retry_in = ?delay, "AWS Marketplace: RegisterUsage failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(16));
            }
        }
    }
}

/// `Ok(detail)` for a transient failure worth retrying, `Err` for a final answer.
#[allow(clippy::needless_pass_by_value)] // the SDK hands the error over by value
fn classify(
    e: aws_sdk_marketplacemetering::error::SdkError<
        aws_sdk_marketplacemetering::operation::register_usage::RegisterUsageError,
    >,
    product_code: &str,
    public_key_version: i32,
) -> Result<String, MeteringError> {
    use aws_sdk_marketplacemetering::error::ProvideErrorMetadata as _;
    use aws_sdk_marketplacemetering::operation::register_usage::RegisterUsageError as E;
    let detail = sdk_detail(&e);
    let Some(service) = e.as_service_error() else {
        return Ok(detail); // timeout, connection, dispatch: transient
    };
    let code = service.code().unwrap_or("unknown").to_owned();
    let msg = service.message().unwrap_or_default().to_owned();
    Err(match service {
        E::CustomerNotEntitledException(_) => MeteringError::NotEntitled {
            product_code: product_code.to_owned(),
            code,
        },
        E::InvalidProductCodeException(_) | E::InvalidPublicKeyVersionException(_) => {
            MeteringError::InvalidProduct {
                product_code: product_code.to_owned(),
                public_key_version,
                code,
                detail: msg,
            }
        }
        E::PlatformNotSupportedException(_)
        | E::InvalidRegionException(_)
        | E::DisabledApiException(_) => MeteringError::Platform { code, detail: msg },
        E::ThrottlingException(_) | E::InternalServiceErrorException(_) => return Ok(detail),
        _ if code.starts_with("AccessDenied") => MeteringError::AccessDenied { detail },
        _ => return Ok(detail),
    })
}
