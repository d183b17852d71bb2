//! One AWS identity for everything the server calls: S3 (through object_store), Secrets Manager
//! and Marketplace Metering share an [`AwsContext`] — one region and one credential chain, with
//! one cache that refreshes expiring credentials before they expire.
//!
//! The chain, first match wins: static keys from the configuration > environment
//! (`AWS_ACCESS_KEY_ID`…) > shared profile (`AWS_PROFILE`, `~/.aws`) > web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE`, EKS/IRSA) > ECS container credentials
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` / `_FULL_URI`: the ECS task role) > EC2 instance
//! metadata. The providers are aws-config's own; this module only orders them, names the one
//! that answered, and adapts them to object_store.
//!
//! The region, first match wins: configuration > `AWS_REGION` / `AWS_DEFAULT_REGION` > shared
//! profile > ECS task metadata (`ECS_CONTAINER_METADATA_URI_V4`, its availability zone) > EC2
//! instance metadata.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::ProvideRegion;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use object_store::aws::AwsCredential;
use tokio::sync::{Mutex, OnceCell};

/// Credentials are refreshed this long before they expire (the SDK's own default buffer).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_mins(5);
/// How long the ECS task metadata endpoint may take to give the availability zone.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the AWS identity could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    #[error("no AWS region: set s3.region (env DUCKLAKE_CATALOG_S3__REGION) or AWS_REGION; on ECS the task metadata gives it")]
    NoRegion,
    #[error("no AWS credentials found (tried config keys, environment, profile, web identity, ECS task role, instance metadata): {detail}; give the ECS task a task role, or set s3.access_key_id and s3.secret_access_key")]
    NoCredentials { detail: String },
    #[error("AWS credentials from {source_name} could not be loaded: {detail}; check that provider's configuration (for ECS: the task role and AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)")]
    CredentialsFailed {
        source_name: &'static str,
        detail: String,
    },
}

/// Where the region came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRegion {
    pub name: String,
    /// `config`, `environment`, `profile`, `ECS task metadata`, `instance metadata`, or
    /// `default for a custom endpoint`.
    pub source: &'static str,
}

/// Static keys given in the configuration (the first link of the chain).
#[derive(Clone, Default)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The credentials in use and the provider that gave them.
#[derive(Clone)]
pub struct FoundCredentials {
    pub access_key_id: String,
    /// `config`, `environment`, `profile`, `web identity`, `ECS task role`, `instance metadata`.
    pub source: &'static str,
    pub expiry: Option<SystemTime>,
    credentials: Credentials,
}

impl fmt::Debug for FoundCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoundCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// The HTTPS client every AWS call uses: rustls on ring.
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

fn provider_config(region: &str) -> ProviderConfig {
    ProviderConfig::default()
        .with_http_client(http_client())
        .with_region(Some(aws_config::Region::new(region.to_owned())))
}

/// Finds the region: `configured` > environment > profile > ECS task metadata > instance
/// metadata. With a custom S3 endpoint (MinIO, moto) and nothing else, `us-east-1`.
pub async fn resolve_region(
    configured: Option<&str>,
    custom_endpoint: bool,
) -> Result<ResolvedRegion, AwsError> {
    let found = |name: String, source| ResolvedRegion { name, source };
    if let Some(r) = configured {
        return Ok(found(r.to_owned(), "config"));
    }
    if let Some(r) = EnvironmentVariableRegionProvider::new().region().await {
        return Ok(found(r.to_string(), "environment"));
    }
    let conf = ProviderConfig::without_region().with_http_client(http_client());
    let profile = aws_config::profile::region::Builder::default()
        .configure(&conf)
        .build();
    if let Some(r) = profile.region().await {
        return Ok(found(r.to_string(), "profile"));
    }
    if let Some(r) = ecs_task_region().await {
        return Ok(found(r, "ECS task metadata"));
    }
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
    } else if let Some(r) = aws_config::imds::region::ImdsRegionProvider::builder()
        .configure(&conf)
        .build()
        .region()
        .await
    {
        return Ok(found(r.to_string(), "instance metadata"));
    }
    if custom_endpoint {
        return Ok(found("us-east-1".into(), "default for a custom endpoint"));
    }
    Err(AwsError::NoRegion)
}

/// The region of the ECS task, from the availability zone in its task metadata (v4).
async fn ecs_task_region() -> Option<String> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok()?;
    let client = reqwest::Client::builder()
        .timeout(METADATA_TIMEOUT)
        .build()
        .ok()?;
    let task: serde_json::Value = client
        .get(format!("{base}/task"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    region_of_zone(task.get("AvailabilityZone")?.as_str()?)
}

/// `us-east-2b` → `us-east-2`; local zones (`us-west-2-lax-1a`) keep their parent region.
fn region_of_zone(zone: &str) -> Option<String> {
    let parts: Vec<&str> = zone.split('-').collect();
    if parts.len() < 3 {
        return None;
    }
    let number: String = parts[2].chars().take_while(char::is_ascii_digit).collect();
    (!number.is_empty()).then(|| format!("{}-{}-{number}", parts[0], parts[1]))
}

/// A provider of the chain, tagged with the name [`FoundCredentials::source`] reports.
#[derive(Debug)]
struct Named<P> {
    name: &'static str,
    inner: P,
}

/// The property a [`Named`] link stores on the credentials it gives.
#[derive(Debug, Clone)]
struct Source(&'static str);

impl<P: ProvideCredentials> ProvideCredentials for Named<P> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut c = self.inner.provide_credentials().await?;
            c.set_property(Source(self.name));
            Ok(c)
        })
    }
}

fn named<P>(name: &'static str, inner: P) -> Named<P> {
    Named { name, inner }
}

fn chain(keys: Option<&StaticKeys>, region: &str) -> CredentialsProviderChain {
    let conf = provider_config(region);
    let env = named("environment", EnvironmentVariableCredentialsProvider::new());
    let mut c = match keys {
        Some(k) => CredentialsProviderChain::first_try(
            "config",
            named(
                "config",
                Credentials::new(
                    &k.access_key_id,
                    &k.secret_access_key,
                    k.session_token.clone(),
                    None,
                    "config",
                ),
            ),
        )
        .or_else("environment", env),
        None => CredentialsProviderChain::first_try("environment", env),
    };
    c = c
        .or_else(
            "profile",
            named(
                "profile",
                ProfileFileCredentialsProvider::builder()
                    .configure(&conf)
                    .build(),
            ),
        )
        .or_else(
            "web identity",
            named(
                "web identity",
                aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder()
                    .configure(&conf)
                    .build(),
            ),
        )
        .or_else(
            "ECS task role",
            named(
                "ECS task role",
                aws_config::ecs::EcsCredentialsProvider::builder()
                    .configure(&conf)
                    .build(),
            ),
        )
        .or_else(
            "instance metadata",
            named(
                "instance metadata",
                aws_config::imds::credentials::ImdsCredentialsProvider::builder()
                    .configure(&conf)
                    .build(),
            ),
        );
    c
}

/// The region and credential chain of this process; cheap to clone (shared state).
#[derive(Clone)]
pub struct AwsContext {
    inner: Arc<Inner>,
}

struct Inner {
    region: String,
    chain: CredentialsProviderChain,
    cached: Mutex<Option<FoundCredentials>>,
    /// How many times the chain was asked (each cache miss or refresh).
    loads: std::sync::atomic::AtomicU64,
    sdk: OnceCell<SdkConfig>,
}

impl fmt::Debug for AwsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsContext")
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

impl AwsContext {
    /// A context for `region`; the chain is asked on first use, not here.
    pub fn new(region: &str, keys: Option<&StaticKeys>) -> Self {
        AwsContext {
            inner: Arc::new(Inner {
                region: region.to_owned(),
                chain: chain(keys, region),
                cached: Mutex::new(None),
                loads: std::sync::atomic::AtomicU64::new(0),
                sdk: OnceCell::new(),
            }),
        }
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// How many times credentials were loaded from the chain (first use and each refresh).
    pub fn credential_loads(&self) -> u64 {
        self.inner.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current credentials, from the cache while they have more than five minutes left.
    pub async fn credentials(&self) -> Result<FoundCredentials, AwsError> {
        let mut cached = self.inner.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.expiry.is_none_or(|e| {
                e.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY)
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        self.inner
            .loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c = self
            .inner
            .chain
            .provide_credentials()
            .await
            .map_err(credentials_error)?;
        let source = c.get_property::<Source>().map_or("unknown", |s| s.0);
        tracing::debug!(source, expiry = ?c.expiry(), "loaded AWS credentials");
        let found = FoundCredentials {
            access_key_id: c.access_key_id().to_owned(),
            source,
            expiry: c.expiry(),
            credentials: c,
        };
        *cached = Some(found.clone());
        Ok(found)
    }

    /// The same credentials, for object_store's S3 client.
    pub fn object_store_credentials(&self) -> object_store::aws::AwsCredentialProvider {
        Arc::new(ObjectStoreCredentials(self.clone()))
    }

    /// An SDK configuration (region, this chain, the rustls client) for the AWS service clients.
    /// Endpoints follow the SDK's own `AWS_ENDPOINT_URL_<SERVICE>` variables.
    pub async fn sdk_config(&self) -> &SdkConfig {
        self.inner
            .sdk
            .get_or_init(|| async {
                aws_config::defaults(BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.inner.region.clone()))
                    .http_client(http_client())
                    .credentials_provider(SharedCredentialsProvider::new(SdkCredentials(
                        self.clone(),
                    )))
                    .load()
                    .await
            })
            .await
    }
}

#[allow(clippy::needless_pass_by_value)] // the map_err signature
fn credentials_error(e: CredentialsError) -> AwsError {
    let detail = error_chain(&e);
    match e {
        CredentialsError::CredentialsNotLoaded(_) => AwsError::NoCredentials { detail },
        _ => AwsError::CredentialsFailed {
            source_name: "the credential chain",
            detail,
        },
    }
}

/// An error and its sources on one line, each cause once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The context as the SDK clients' credentials provider (they add their own identity cache).
#[derive(Debug)]
struct SdkCredentials(AwsContext);

impl ProvideCredentials for SdkCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0
                .credentials()
                .await
                .map(|c| c.credentials)
                .map_err(CredentialsError::provider_error)
        })
    }
}

/// The context as object_store's credential provider.
#[derive(Debug)]
struct ObjectStoreCredentials(AwsContext);

#[async_trait::async_trait]
impl object_store::CredentialProvider for ObjectStoreCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let c = self
            .0
            .credentials()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(Arc::new(AwsCredential {
            key_id: c.access_key_id,
            secret_key: c.credentials.secret_access_key().to_owned(),
            token: c.credentials.session_token().map(str::to_owned),
        }))
    }
}

/// What a `HEAD` of a bucket tells: the bucket's region (`x-amz-bucket-region`, sent even
/// with a 301 or 403 answer) and S3's clock (`Date`).
#[derive(Debug, Clone, Default)]
pub struct S3Probe {
    pub bucket_region: Option<String>,
    pub server_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl AwsContext {
    /// HEADs `bucket` (path style) at `endpoint` or at this region's AWS endpoint, signed with
    /// SigV4 (the aws-sigv4 crate) when credentials are at hand. Never fails: what S3 did not
    /// say stays `None`.
    pub async fn probe_bucket(&self, endpoint: Option<&str>, bucket: &str) -> S3Probe {
        let url = match endpoint {
            Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
            None => format!("https://s3.{}.amazonaws.com/{bucket}", self.region()),
        };
        let Ok(client) = reqwest::Client::builder()
            .timeout(METADATA_TIMEOUT * 3)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        else {
            return S3Probe::default();
        };
        let mut request = client.head(&url);
        if let Ok(found) = self.credentials().await {
            for (name, value) in sign_head(&url, self.region(), found.credentials) {
                request = request.header(name, value);
            }
        }
        let Ok(resp) = request.send().await else {
            return S3Probe::default();
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        S3Probe {
            bucket_region: header("x-amz-bucket-region"),
            server_time: header("date")
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
                .map(|d| d.with_timezone(&chrono::Utc)),
        }
    }
}

/// SigV4 headers for an empty-bodied S3 `HEAD` of `url`.
fn sign_head(url: &str, region: &str, credentials: Credentials) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
    };
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let Ok(params) = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
    else {
        return Vec::new();
    };
    let params = params.into();
    let Ok(request) =
        SignableRequest::new("HEAD", url, std::iter::empty(), SignableBody::Bytes(&[]))
    else {
        return Vec::new();
    };
    match sign(request, &params) {
        Ok(out) => out
            .output()
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_map_to_their_region() {
        assert_eq!(region_of_zone("us-east-2b").as_deref(), Some("us-east-2"));
        assert_eq!(
            region_of_zone("eu-central-1a").as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(
            region_of_zone("us-west-2-lax-1a").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(region_of_zone("nonsense"), None);
    }

    #[tokio::test]
    async fn configured_keys_come_first_and_are_named() {
        let ctx = AwsContext::new(
            "eu-west-1",
            Some(&StaticKeys {
                access_key_id: "AKIDCONFIG".into(),
                secret_access_key: "s".into(),
                session_token: None,
            }),
        );
        let c = ctx.credentials().await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.source),
            ("AKIDCONFIG", "config")
        );
        ctx.credentials().await.unwrap();
        assert_eq!(ctx.credential_loads(), 1, "non-expiring keys are cached");
    }

    #[tokio::test]
    async fn configured_region_wins() {
        let r = resolve_region(Some("ap-south-1"), false).await.unwrap();
        assert_eq!((r.name.as_str(), r.source), ("ap-south-1", "config"));
    }
}
