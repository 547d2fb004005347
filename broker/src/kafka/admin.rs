//! CreateTopics, DeleteTopics, DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs, through the same cluster-manager calls as the gRPC Admin
//! service. Kafka's topic config names are ours with dots for underscores
//! (`retention.ms` is `retention_ms`); `cleanup.policy=delete` is accepted as what
//! every topic does, and other Kafka keys are refused with INVALID_CONFIG.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use pubsub_proto::auth::Operation;
use pubsub_proto::topic_config::{ConfigKey, ConfigSetting, build_config};
use pubsub_proto::v1;

use super::codes;
use super::conn::Ctx;
use super::metadata::str_bytes;
use crate::error::Error;

/// Kafka's resource types in config requests.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// IncrementalAlterConfigs' SET operation; the others are not supported.
const OP_SET: i8 = 0;
/// DescribeConfigs sources and types (KIP-226, KIP-569).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

/// An error code with the message Kafka clients print.
type Refusal = (i16, String);

fn refusal(error: &Error) -> Refusal {
    (codes::code(error), error.to_string())
}

fn message(text: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(text))
}

/// Our setting for a Kafka `name=value`; `None` for an accepted no-op.
fn setting(name: &str, value: Option<&str>) -> Result<Option<ConfigSetting>, Refusal> {
    let invalid = |text: String| (ResponseError::InvalidConfig.code(), text);
    let value = value.ok_or_else(|| invalid(format!("{name} has no value")))?;
    if name == "cleanup.policy" {
        return match value {
            "delete" => Ok(None),
            other => Err(invalid(format!(
                "cleanup.policy={other} is not supported; only delete"
            ))),
        };
    }
    let ours = name.replace('.', "_");
    format!("{ours}={value}")
        .parse::<ConfigSetting>()
        .map(Some)
        .map_err(|e| invalid(format!("{name}: {e}")))
}

fn topic_config<'a>(
    pairs: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<v1::TopicConfig, Refusal> {
    let mut settings = Vec::new();
    for (name, value) in pairs {
        settings.extend(setting(name, value)?);
    }
    build_config(settings).map_err(|e| (ResponseError::InvalidConfig.code(), e.to_string()))
}

async fn create_one(
    ctx: &Ctx,
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
) -> Result<(u32, u32), Refusal> {
    let name = topic.name.0.as_str();
    if !ctx.allowed(Operation::Admin, name) {
        return Err((
            ResponseError::TopicAuthorizationFailed.code(),
            format!("not allowed to create topic {name:?}"),
        ));
    }
    if !topic.assignments.is_empty() {
        return Err((ResponseError::InvalidRequest.code(), "manual replica assignment is not supported; replicas are placed by the cluster manager".into()));
    }
    let partitions = match topic.num_partitions {
        -1 => 1,
        n => u32::try_from(n).map_err(|_| {
            (
                ResponseError::InvalidPartitions.code(),
                format!("{n} partitions"),
            )
        })?,
    };
    let replication_factor = match topic.replication_factor {
        -1 => 0,
        n => u32::try_from(n).map_err(|_| {
            (
                ResponseError::InvalidReplicationFactor.code(),
                format!("replication factor {n}"),
            )
        })?,
    };
    let config = topic_config(
        topic
            .configs
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
    )?;
    if validate_only {
        let known = Some(replication_factor).filter(|r| *r > 0);
        config
            .validate(known)
            .map_err(|e| refusal(&Error::InvalidConfig(e)))?;
        return Ok((partitions, replication_factor));
    }
    let request = v1::CreateTopicRequest {
        name: name.to_string(),
        partitions,
        replication_factor,
        config: Some(config),
    };
    let created = ctx
        .broker
        .create_topic(request)
        .await
        .map_err(|e| refusal(&e))?;
    Ok((created.record.partitions, created.record.replication_factor))
}

/// Answers CreateTopics.
pub(super) async fn create_topics(ctx: Ctx, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let answer = CreatableTopicResult::default().with_name(topic.name.clone());
        // Partition count and replication factor are in answers from v5 on.
        let counts = ctx.version >= 5;
        let answer = match create_one(&ctx, topic, request.validate_only).await {
            Ok((partitions, replication_factor)) if counts => answer
                .with_num_partitions(partitions as i32)
                .with_replication_factor(replication_factor as i16),
            Ok(_) => answer,
            Err((code, text)) if counts => answer
                .with_error_code(code)
                .with_error_message(message(text))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
            Err((code, text)) => answer
                .with_error_code(code)
                .with_error_message(message(text)),
        };
        topics.push(answer);
    }
    CreateTopicsResponse::default().with_topics(topics)
}

async fn create_partitions_of(
    ctx: &Ctx,
    topic: &kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), Refusal> {
    let name = topic.name.0.as_str();
    if !ctx.allowed(Operation::Admin, name) {
        return Err((
            ResponseError::TopicAuthorizationFailed.code(),
            "not allowed".into(),
        ));
    }
    if topic.assignments.is_some() {
        return Err((
            ResponseError::InvalidRequest.code(),
            "manual replica assignment is not supported; replicas are placed by the cluster manager".into(),
        ));
    }
    let count = u32::try_from(topic.count).map_err(|_| {
        (
            ResponseError::InvalidPartitions.code(),
            format!("{} partitions", topic.count),
        )
    })?;
    let current = ctx
        .broker
        .topic(name)
        .map_err(|e| refusal(&e))?
        .record
        .partitions;
    if count <= current {
        return Err((
            ResponseError::InvalidPartitions.code(),
            format!("topic {name:?} has {current} partitions; the new count must be higher"),
        ));
    }
    if validate_only {
        return Ok(());
    }
    let request = v1::CreatePartitionsRequest {
        name: name.to_string(),
        partitions: count,
    };
    ctx.broker
        .create_partitions(request)
        .await
        .map(|_| ())
        .map_err(|e| refusal(&e))
}

/// Answers CreatePartitions: more partitions, placed by the cluster manager.
pub(super) async fn create_partitions(
    ctx: Ctx,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let answer = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(
            match create_partitions_of(&ctx, topic, request.validate_only).await {
                Ok(()) => answer,
                Err((code, text)) => answer
                    .with_error_code(code)
                    .with_error_message(message(text)),
            },
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Answers DeleteTopics (by name; topic ids are not used).
pub(super) async fn delete_topics(ctx: Ctx, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for name in request.topic_names {
        let answer = DeletableTopicResult::default().with_name(Some(name.clone()));
        let result = if ctx.allowed(Operation::Admin, name.0.as_str()) {
            ctx.broker
                .delete_topic(name.0.as_str())
                .await
                .map_err(|e| refusal(&e))
        } else {
            Err((
                ResponseError::TopicAuthorizationFailed.code(),
                "not allowed".into(),
            ))
        };
        responses.push(match result {
            Ok(()) => answer,
            // Messages are in answers from v5 on.
            Err((code, text)) if ctx.version >= 5 => answer
                .with_error_code(code)
                .with_error_message(message(text)),
            Err((code, _)) => answer.with_error_code(code),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

fn config_type(key: ConfigKey) -> i8 {
    match key {
        ConfigKey::Fsync => TYPE_STRING,
        ConfigKey::RetainUntilConsumed => TYPE_BOOLEAN,
        _ => TYPE_LONG,
    }
}

fn describe_topic(
    ctx: &Ctx,
    name: &str,
    keys: Option<&[StrBytes]>,
) -> Result<Vec<DescribeConfigsResourceResult>, Refusal> {
    if !ctx.allowed(Operation::Describe, name) {
        return Err((
            ResponseError::TopicAuthorizationFailed.code(),
            "not allowed".into(),
        ));
    }
    let topic = ctx.broker.topic(name).map_err(|e| refusal(&e))?;
    let defaults = &topic.metadata.default_keys;
    let mut configs = Vec::new();
    for key in ConfigKey::ALL {
        let kafka_name = key.name().replace('_', ".");
        if keys.is_some_and(|keys| !keys.iter().any(|k| k.as_str() == kafka_name)) {
            continue;
        }
        let default = defaults.iter().any(|d| d == key.name());
        configs.push(
            DescribeConfigsResourceResult::default()
                .with_name(str_bytes(&kafka_name))
                .with_value(
                    topic
                        .record
                        .settings
                        .value_text(key)
                        .map(StrBytes::from_string),
                )
                .with_read_only(!key.alterable())
                .with_config_source(if default {
                    SOURCE_DEFAULT
                } else {
                    SOURCE_TOPIC
                })
                // Types are in answers from v3 on.
                .with_config_type(if ctx.version >= 3 {
                    config_type(key)
                } else {
                    0
                }),
        );
    }
    Ok(configs)
}

/// Answers DescribeConfigs: a topic's settings under their Kafka names; a broker's
/// (which has none that Kafka clients could use) as an empty list.
pub(super) async fn describe_configs(
    ctx: Ctx,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let answer = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let described = match resource.resource_type {
            RESOURCE_TOPIC => describe_topic(
                &ctx,
                resource.resource_name.as_str(),
                resource.configuration_keys.as_deref(),
            ),
            RESOURCE_BROKER => Ok(Vec::new()),
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("resource type {other} has no configs here"),
            )),
        };
        results.push(match described {
            Ok(configs) => answer.with_configs(configs),
            Err((code, text)) => answer
                .with_error_code(code)
                .with_error_message(message(text)),
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

async fn alter_topic<'a>(
    ctx: &Ctx,
    resource_type: i8,
    name: &str,
    pairs: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    validate_only: bool,
) -> Result<(), Refusal> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ResponseError::InvalidRequest.code(),
            "only topic configs can be altered".into(),
        ));
    }
    if !ctx.allowed(Operation::Admin, name) {
        return Err((
            ResponseError::TopicAuthorizationFailed.code(),
            "not allowed".into(),
        ));
    }
    let config = topic_config(pairs)?;
    if validate_only {
        return config
            .validate(None)
            .map_err(|e| refusal(&Error::InvalidConfig(e)));
    }
    let request = v1::AlterTopicConfigRequest {
        name: name.to_string(),
        config: Some(config),
    };
    ctx.broker
        .alter_topic_config(request)
        .await
        .map(|_| ())
        .map_err(|e| refusal(&e))
}

/// Answers AlterConfigs. Unlike Kafka, keys left out keep their values rather than
/// returning to the defaults.
pub(super) async fn alter_configs(ctx: Ctx, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let pairs = resource
            .configs
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str())));
        let result = alter_topic(
            &ctx,
            resource.resource_type,
            resource.resource_name.as_str(),
            pairs,
            request.validate_only,
        )
        .await;
        let answer = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match result {
            Ok(()) => answer,
            Err((code, text)) => answer
                .with_error_code(code)
                .with_error_message(message(text)),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Answers IncrementalAlterConfigs; SET only (DELETE, APPEND and SUBTRACT are refused).
pub(super) async fn incremental_alter_configs(
    ctx: Ctx,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let answer = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let result = if let Some(other) = resource
            .configs
            .iter()
            .find(|c| c.config_operation != OP_SET)
        {
            Err((
                ResponseError::InvalidRequest.code(),
                format!(
                    "config operation {} on {} is not supported; only SET",
                    other.config_operation,
                    other.name.as_str()
                ),
            ))
        } else {
            let pairs = resource
                .configs
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str())));
            alter_topic(
                &ctx,
                resource.resource_type,
                resource.resource_name.as_str(),
                pairs,
                request.validate_only,
            )
            .await
        };
        responses.push(match result {
            Ok(()) => answer,
            Err((code, text)) => answer
                .with_error_code(code)
                .with_error_message(message(text)),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_map_to_our_settings() {
        assert_eq!(
            setting("retention.ms", Some("1000")).unwrap(),
            Some(ConfigSetting::RetentionMs(1000))
        );
        assert_eq!(
            setting("max.message.bytes", Some("2048")).unwrap(),
            Some(ConfigSetting::MaxMessageBytes(2048))
        );
        assert_eq!(setting("cleanup.policy", Some("delete")).unwrap(), None);
        assert!(setting("cleanup.policy", Some("compact")).is_err());
        assert!(setting("compression.type", Some("zstd")).is_err());
        assert!(setting("retention.ms", None).is_err());
    }
}
