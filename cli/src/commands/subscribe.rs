//! The consumer-manager verbs: `subscribe` (follow and ack as it prints),
//! `unsubscribe`, `subscriptions`, `groups describe`, `presence`, `history` and
//! `dlq replay`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use pubsub_client::{ConsumerRecord, DeliveredRecord, PartitionId, Subscriptions};
use pubsub_proto::v1;
use serde_json::json;

use super::output::{OutputFormat, Table, print_json, print_text};
use super::read::parse_from_time_now;
use super::record::{write_json, write_json_delivered, write_text};
use super::{GlobalArgs, connect_consumer_manager};
use pubsub_proto::units::{format_ms, parse_retention};

/// Arguments of `subscribe`.
#[derive(Args)]
pub struct SubscribeArgs {
    /// Topic to subscribe to.
    pub topic: String,
    /// Name of the durable subscription (created if missing).
    #[arg(long, short = 's', value_name = "NAME")]
    pub subscription: String,
    /// A consumer group: partitions are shared out between the members subscribed
    /// under this name, each partition read by one of them.
    #[arg(long)]
    pub group: bool,
    /// A new subscription starts at the first stored record instead of new records.
    #[arg(long, conflicts_with = "from_time")]
    pub from_beginning: bool,
    /// A new subscription starts at TIME (RFC 3339 or a duration ago, like 10m).
    #[arg(long, value_name = "TIME", value_parser = parse_from_time_now)]
    pub from_time: Option<i64>,
    /// Records older than this are skipped for this subscription (e.g. 3d, 12h).
    #[arg(long, value_name = "AGE", value_parser = parse_retention)]
    pub retention: Option<i64>,
    /// A record not acknowledged within this long is delivered again.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ack_deadline: Option<Duration>,
    /// After this many deliveries a record goes to the dead-letter topic.
    #[arg(long, value_name = "N")]
    pub max_deliveries: Option<u32>,
    /// Group members unheard for this long leave the group.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub session_timeout: Option<Duration>,
    /// Exit after printing and acknowledging N records.
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Unacknowledged records the server may send ahead.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub credits: u32,
    /// This member's id (presence shows it) [default: chosen by the server].
    #[arg(long, value_name = "ID", default_value = "")]
    pub member_id: String,
    /// text: each value on its own line; json: one object per record, with its
    /// delivery attempt. [default: the --output format]
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

/// Arguments of `unsubscribe`.
#[derive(Args)]
pub struct UnsubscribeArgs {
    /// Topic of the subscription.
    pub topic: String,
    /// Subscription to delete, with its committed offsets.
    #[arg(long, short = 's', value_name = "NAME")]
    pub subscription: String,
}

/// Arguments of `subscriptions`.
#[derive(Args)]
pub struct SubscriptionsArgs {
    /// Only subscriptions of this topic.
    pub topic: Option<String>,
}

/// `groups` verbs.
#[derive(Subcommand)]
pub enum GroupsCommand {
    /// A subscription's members, generation and per-partition lag.
    Describe {
        /// Subscription (group) name.
        name: String,
    },
}

/// Arguments of `presence`.
#[derive(Args)]
pub struct PresenceArgs {
    /// Topic whose subscribers to list.
    pub topic: String,
    /// Only this subscription.
    #[arg(long, short = 's', value_name = "NAME")]
    pub subscription: Option<String>,
}

/// Arguments of `history`.
#[derive(Args)]
pub struct HistoryArgs {
    /// Topic to show.
    pub topic: String,
    /// Only this partition.
    #[arg(long, short = 'p', value_name = "P")]
    pub partition: Option<u32>,
    /// The last N records of each partition.
    #[arg(long, value_name = "N", group = "range")]
    pub last: Option<u64>,
    /// Records from this offset on.
    #[arg(long, value_name = "OFFSET", group = "range")]
    pub since_offset: Option<u64>,
    /// Records from TIME on (RFC 3339 or a duration ago).
    #[arg(long, value_name = "TIME", group = "range", value_parser = parse_from_time_now)]
    pub since_time: Option<i64>,
    /// text or json [default: the --output format].
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

/// `dlq` verbs.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// Moves a subscription's dead letters back to its topic, each once.
    Replay {
        /// Subscription whose dead letters to replay.
        #[arg(long, short = 's', value_name = "NAME")]
        subscription: String,
        /// At most this many [default: all].
        #[arg(long, value_name = "N", default_value_t = 0)]
        max: u64,
    },
}

fn to_consumer_record(record: &DeliveredRecord) -> ConsumerRecord {
    ConsumerRecord {
        partition: PartitionId(record.partition),
        offset: record.offset,
        timestamp: record.timestamp_ms,
        key: record.key.clone(),
        value: record.value.clone(),
        headers: record
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
    }
}

/// Runs `subscribe`: creates the subscription if needed, then follows it, printing
/// each record and acknowledging it once printed.
pub async fn subscribe(global: &GlobalArgs, args: SubscribeArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(global.output);
    let subscriptions = Subscriptions::new(connect_consumer_manager(global).await?);
    use v1::subscription_options::Start;
    let options = v1::SubscriptionOptions {
        start: Some(match (args.from_beginning, args.from_time) {
            (true, _) => Start::Earliest(true),
            (false, Some(ts)) => Start::TimestampMs(ts),
            (false, None) => Start::Latest(true),
        }),
        retention_ms: args.retention.unwrap_or(0).max(0),
        ack_deadline_ms: args.ack_deadline.map_or(0, |d| d.as_millis() as u32),
        max_deliveries: args.max_deliveries.unwrap_or(0),
        dead_letter_topic: String::new(),
        group: args.group,
        session_timeout_ms: args.session_timeout.map_or(0, |d| d.as_millis() as u32),
    };
    match subscriptions
        .subscribe(&args.topic, &args.subscription, options.clone())
        .await
    {
        Ok(_) => {}
        // Joining an existing subscription with default flags: use it as it is.
        Err(pubsub_client::Error::AlreadyExists { .. }) if !changes_options(&args) => {}
        Err(e) => return Err(e.into()),
    }
    if args.count == Some(0) {
        return Ok(());
    }
    let credits = match args.count {
        Some(n) => args.credits.min(n.min(u64::from(u32::MAX)) as u32).max(1),
        None => args.credits.max(1),
    };
    let mut stream = subscriptions
        .stream(&args.subscription, &args.member_id, credits)
        .await?;
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let next = tokio::select! {
            record = stream.next_record() => match record {
                Ok(Some(record)) => Ok(record),
                Ok(None) => Err(pubsub_client::Error::Closed),
                Err(e) => Err(e),
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        let record = match next {
            Ok(record) => record,
            Err(e) if can_reconnect(&e) => {
                stream = reconnect(&subscriptions, &args, credits, e, &mut lost_since).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for skip in stream.skipped.drain(..) {
            eprintln!(
                "warning: partition {} offsets {}..{} skipped ({})",
                skip.partition, skip.from_offset, skip.to_offset, skip.reason
            );
        }
        {
            let mut out = stdout.lock();
            let consumer_record = to_consumer_record(&record);
            match format {
                OutputFormat::Text => write_text(&mut out, &consumer_record)?,
                OutputFormat::Json => {
                    write_json_delivered(&mut out, &consumer_record, Some(record.delivery_attempt))?
                }
            }
            out.flush()?;
        }
        if let Err(e) = stream.ack(record.partition, record.offset).await {
            // Not acknowledged: the record comes again (delivery is at least once).
            if !can_reconnect(&e) {
                return Err(e.into());
            }
            stream = reconnect(&subscriptions, &args, credits, e, &mut lost_since).await?;
            continue;
        }
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    stream.close().await?;
    Ok(())
}

/// How long `subscribe` keeps trying to reach the consumer manager again.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// Pause between reconnection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// Errors after which a subscriber reconnects: the server restarted or the link
/// broke. A deleted subscription or a refused request ends `subscribe`.
fn can_reconnect(error: &pubsub_client::Error) -> bool {
    error.is_retriable()
        || matches!(error, pubsub_client::Error::Closed)
        // A server that went away mid-stream can surface as an internal error.
        || matches!(error, pubsub_client::Error::Internal { .. })
}

/// Opens the subscription's stream again after `error`, retrying for up to
/// [`RECONNECT_FOR`] since the connection was first lost.
async fn reconnect(
    subscriptions: &Subscriptions,
    args: &SubscribeArgs,
    credits: u32,
    error: pubsub_client::Error,
    lost_since: &mut Option<std::time::Instant>,
) -> anyhow::Result<pubsub_client::SubscriberStream> {
    let since = *lost_since.get_or_insert_with(std::time::Instant::now);
    let why = match error {
        pubsub_client::Error::Closed => "the server ended the stream".to_string(),
        other => other.to_string(),
    };
    eprintln!("connection to the consumer manager lost ({why}); reconnecting");
    loop {
        tokio::time::sleep(RECONNECT_PAUSE).await;
        match subscriptions
            .stream(&args.subscription, &args.member_id, credits)
            .await
        {
            Ok(stream) => {
                *lost_since = None;
                eprintln!("reconnected to subscription {:?}", args.subscription);
                return Ok(stream);
            }
            Err(e) if can_reconnect(&e) && since.elapsed() < RECONNECT_FOR => {}
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!(
                    "cannot reach subscription {:?} again",
                    args.subscription
                )));
            }
        }
    }
}

/// Whether `subscribe` was given options that define a subscription (other than
/// its start), so an existing one with different options is an error.
fn changes_options(args: &SubscribeArgs) -> bool {
    args.group
        || args.retention.is_some()
        || args.ack_deadline.is_some()
        || args.max_deliveries.is_some()
        || args.session_timeout.is_some()
}

/// Runs `unsubscribe`.
pub async fn unsubscribe(global: &GlobalArgs, args: UnsubscribeArgs) -> anyhow::Result<()> {
    let subscriptions = Subscriptions::new(connect_consumer_manager(global).await?);
    subscriptions
        .unsubscribe(&args.topic, &args.subscription)
        .await?;
    if !global.quiet {
        eprintln!("deleted subscription {:?}", args.subscription);
    }
    Ok(())
}

fn total_lag(info: &v1::SubscriptionInfo) -> Option<u64> {
    info.partitions.iter().map(|p| p.lag).sum()
}

fn info_json(info: &v1::SubscriptionInfo) -> serde_json::Value {
    let options = info.options.clone().unwrap_or_default();
    json!({
        "name": info.name,
        "topic": info.topic,
        "group": options.group,
        "generation": info.generation,
        "ack_deadline_ms": options.ack_deadline_ms,
        "retention_ms": options.retention_ms,
        "max_deliveries": options.max_deliveries,
        "dead_letter_topic": options.dead_letter_topic,
        "dead_lettered": info.dead_lettered,
        "lag": total_lag(info),
        "partitions": info.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "committed_offset": p.committed_offset,
            "end_offset": p.end_offset,
            "lag": p.lag,
            "outstanding": p.outstanding,
            "stopped": p.stopped.as_ref().map(|s| json!({
                "offset": s.offset,
                "reason": s.reason,
            })),
        })).collect::<Vec<_>>(),
        "members": info.members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

fn member_json(m: &v1::MemberInfo) -> serde_json::Value {
    json!({
        "member_id": m.member_id,
        "subscription": m.subscription,
        "client_address": m.client_address,
        "connected_since_ms": m.connected_since_ms,
        "partitions": m.partitions,
        "lag": m.lag,
        "mode": m.mode,
    })
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The partitions whose delivery is stopped, as `P@OFFSET` (or `-`).
fn stopped_column(info: &v1::SubscriptionInfo) -> String {
    let stopped: Vec<String> = info
        .partitions
        .iter()
        .filter_map(|p| Some(format!("{}@{}", p.partition, p.stopped.as_ref()?.offset)))
        .collect();
    if stopped.is_empty() {
        "-".to_string()
    } else {
        stopped.join(",")
    }
}

/// One line per stopped partition, each after `prefix`: where, why, how to go on.
fn stopped_lines(info: &v1::SubscriptionInfo, prefix: &str) -> String {
    let mut text = String::new();
    for p in &info.partitions {
        if let Some(stopped) = &p.stopped {
            text.push_str(&format!(
                "{prefix}partition {} stopped at offset {}: the batch there cannot be decoded \
                 ({}); seek past it to resume\n",
                p.partition, stopped.offset, stopped.reason
            ));
        }
    }
    text
}

/// Runs `subscriptions`.
pub async fn list(global: &GlobalArgs, args: SubscriptionsArgs) -> anyhow::Result<()> {
    let subscriptions = Subscriptions::new(connect_consumer_manager(global).await?);
    let infos = subscriptions
        .list(args.topic.as_deref().unwrap_or(""), "")
        .await?;
    if global.output == OutputFormat::Json {
        return print_json(&infos.iter().map(info_json).collect::<Vec<_>>());
    }
    let mut table = Table::new(&[
        "SUBSCRIPTION",
        "TOPIC",
        "KIND",
        "MEMBERS",
        "LAG",
        "DEAD-LETTERED",
        "STOPPED",
    ]);
    for info in &infos {
        let group = info.options.as_ref().is_some_and(|o| o.group);
        table.row(vec![
            info.name.clone(),
            info.topic.clone(),
            if group { "group" } else { "shared" }.into(),
            info.members.len().to_string(),
            optional(total_lag(info)),
            info.dead_lettered.to_string(),
            stopped_column(info),
        ]);
    }
    let mut text = table.render();
    let stopped: String = infos
        .iter()
        .map(|info| stopped_lines(info, &format!("subscription {} ", info.name)))
        .collect();
    if !stopped.is_empty() {
        text.push('\n');
        text.push_str(&stopped);
    }
    Ok(print_text(&text)?)
}

/// Runs `groups describe`.
pub async fn groups(global: &GlobalArgs, command: GroupsCommand) -> anyhow::Result<()> {
    let GroupsCommand::Describe { name } = command;
    let subscriptions = Subscriptions::new(connect_consumer_manager(global).await?);
    let info = subscriptions
        .list("", &name)
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("subscription {name:?} does not exist"))?;
    if global.output == OutputFormat::Json {
        return print_json(&info_json(&info));
    }
    let owner = |partition: u32| {
        info.members
            .iter()
            .filter(|m| m.partitions.contains(&partition))
            .map(|m| m.member_id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut text = format!(
        "subscription {} on topic {} (generation {}, lag {})\n\n",
        info.name,
        info.topic,
        info.generation,
        optional(total_lag(&info))
    );
    let mut table = Table::new(&[
        "PARTITION",
        "COMMITTED",
        "END",
        "LAG",
        "OUTSTANDING",
        "MEMBER",
    ]);
    for p in &info.partitions {
        table.row(vec![
            p.partition.to_string(),
            p.committed_offset.to_string(),
            optional(p.end_offset),
            optional(p.lag),
            p.outstanding.to_string(),
            owner(p.partition),
        ]);
    }
    text.push_str(&table.render());
    let stopped = stopped_lines(&info, "");
    if !stopped.is_empty() {
        text.push('\n');
        text.push_str(&stopped);
    }
    Ok(print_text(&text)?)
}

/// Runs `presence`.
pub async fn presence(global: &GlobalArgs, args: PresenceArgs) -> anyhow::Result<()> {
    let subscriptions = Subscriptions::new(connect_consumer_manager(global).await?);
    let members = subscriptions
        .presence(&args.topic, args.subscription.as_deref().unwrap_or(""))
        .await?;
    if members.is_empty() {
        // Nobody connected is an answer only for a topic that exists.
        pubsub_client::Admin::new(super::connect(global).await?)
            .describe_topic(&args.topic)
            .await?;
    }
    if global.output == OutputFormat::Json {
        return print_json(&members.iter().map(member_json).collect::<Vec<_>>());
    }
    let now = pubsub_client::now_ms();
    let mut table = Table::new(&[
        "MEMBER",
        "SUBSCRIPTION",
        "ADDRESS",
        "CONNECTED",
        "PARTITIONS",
        "LAG",
        "MODE",
    ]);
    for m in &members {
        let partitions: Vec<String> = m.partitions.iter().map(u32::to_string).collect();
        table.row(vec![
            m.member_id.clone(),
            m.subscription.clone(),
            m.client_address.clone(),
            format!(
                "{} ago",
                format_ms((now - m.connected_since_ms).max(0) / 1000 * 1000)
            ),
            partitions.join(","),
            m.lag.to_string(),
            m.mode.clone(),
        ]);
    }
    Ok(print_text(&table.render())?)
}

/// Runs `history`: prints the records, and says on stderr when retention removed
/// part of the asked range.
pub async fn history(global: &GlobalArgs, args: HistoryArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(global.output);
    let range = match (args.last, args.since_offset, args.since_time) {
        (Some(n), _, _) => v1::history_request::Range::Last(n),
        (_, Some(o), _) => v1::history_request::Range::SinceOffset(o),
        (_, _, Some(ts)) => v1::history_request::Range::SinceTimestampMs(ts),
        _ => bail!("history needs --last N, --since-offset OFFSET or --since-time TIME"),
    };
    let subscriptions = Subscriptions::new(connect_consumer_manager(global).await?);
    let partitions = subscriptions
        .history(v1::HistoryRequest {
            topic: args.topic.clone(),
            partition: args.partition,
            range: Some(range),
            max_records: 0,
        })
        .await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for partition in &partitions {
        if partition.requested_from < partition.log_start_offset {
            eprintln!(
                "warning: partition {}: offsets {}..{} were removed by retention; history starts at {}",
                partition.partition,
                partition.requested_from,
                partition.log_start_offset,
                partition.log_start_offset
            );
        }
        if partition.truncated {
            eprintln!(
                "warning: partition {}: more records in range than one history call returns",
                partition.partition
            );
        }
        for record in &partition.records {
            let record = to_consumer_record(record);
            match format {
                OutputFormat::Text => write_text(&mut out, &record)?,
                OutputFormat::Json => write_json(&mut out, &record)?,
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs `dlq replay`.
pub async fn dlq(global: &GlobalArgs, command: DlqCommand) -> anyhow::Result<()> {
    let DlqCommand::Replay { subscription, max } = command;
    let subscriptions = Subscriptions::new(connect_consumer_manager(global).await?);
    let replayed = subscriptions
        .replay_dead_letters(&subscription, max)
        .await?;
    if global.output == OutputFormat::Json {
        return print_json(&json!({ "replayed": replayed }));
    }
    println!("replayed {replayed} dead letters of {subscription:?}");
    Ok(())
}
