//! What the end-to-end tests ask of a bucket, straight through `aws-sdk-s3`, never through
//! chunkwise-server: set its CORS rule, read an object back, list multipart uploads.
//! Credentials and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_ENDPOINT and
//! S3_REGION.
//!
//!   s3tool cors BUCKET ORIGINS     the rule a direct-mode page needs (README); ORIGINS
//!                                  comma-separated
//!   s3tool sha256 BUCKET KEY       prints "<sha256 hex> <size>" of the object
//!   s3tool uploads BUCKET          prints the number of unfinished multipart uploads
//!   s3tool keys BUCKET             prints every object key, one per line
//!   s3tool presign-put BUCKET KEY  prints a presigned PUT URL (one hour), for the bench

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use sha2::{Digest, Sha256};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(env("S3_ENDPOINT")?)
        .region(Region::new(env("S3_REGION")?))
        .credentials_provider(Credentials::new(
            env("AWS_ACCESS_KEY_ID")?,
            env("AWS_SECRET_ACCESS_KEY")?,
            None,
            None,
            "s3tool",
        ))
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        // The rule chunkwise needs: PUT of a part with its checksum header.
        ["cors", bucket, origin] => {
            let rule = origins(origin)
                .allowed_methods("PUT")
                .allowed_headers("x-amz-checksum-sha256")
                .allowed_headers("content-type");
            put_cors(&s3, bucket, rule).await?;
        }
        // What a client sending every S3 request from the browser needs (@uppy/aws-s3):
        // every method, any header, and the ETag readable.
        ["cors-wide", bucket, origin] => {
            let rule = ["GET", "PUT", "POST", "DELETE"]
                .into_iter()
                .fold(origins(origin), |rule, method| rule.allowed_methods(method))
                .allowed_headers("*")
                .expose_headers("ETag");
            put_cors(&s3, bucket, rule).await?;
        }
        ["sha256", bucket, key] => {
            let object = s3.get_object().bucket(*bucket).key(*key).send().await?;
            let mut body = object.body;
            let mut hash = Sha256::new();
            let mut size = 0u64;
            while let Some(bytes) = body.try_next().await? {
                size += bytes.len() as u64;
                hash.update(&bytes);
            }
            println!("{} {size}", chunkwise_core::protocol::hex(&hash.finalize()));
        }
        ["uploads", bucket] => {
            let listed = s3.list_multipart_uploads().bucket(*bucket).send().await?;
            println!("{}", listed.uploads().len());
        }
        ["keys", bucket] => {
            let listed = s3.list_objects_v2().bucket(*bucket).send().await?;
            for object in listed.contents() {
                println!("{}", object.key().unwrap_or_default());
            }
        }
        ["presign-put", bucket, key] => {
            let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(
                std::time::Duration::from_secs(3600),
            )?;
            let request = s3
                .put_object()
                .bucket(*bucket)
                .key(*key)
                .presigned(config)
                .await?;
            println!("{}", request.uri());
        }
        _ => return Err("usage: s3tool cors|sha256|uploads|keys|presign-put ...".into()),
    }
    Ok(())
}

/// A CORS rule for the comma-separated `origins`.
fn origins(origins: &str) -> aws_sdk_s3::types::builders::CorsRuleBuilder {
    origins
        .split(',')
        .fold(CorsRule::builder(), |rule, origin| {
            rule.allowed_origins(origin)
        })
}

/// Makes `rule` (cached by browsers for two hours) the bucket's only CORS rule.
async fn put_cors(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    rule: aws_sdk_s3::types::builders::CorsRuleBuilder,
) -> Result<(), Box<dyn std::error::Error>> {
    let rule = rule.max_age_seconds(7200).build()?;
    s3.put_bucket_cors()
        .bucket(bucket)
        .cors_configuration(CorsConfiguration::builder().cors_rules(rule).build()?)
        .send()
        .await?;
    Ok(())
}
