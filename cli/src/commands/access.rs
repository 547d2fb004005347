//! `pubsub token create|list|revoke` and `pubsub acl add|remove|list`: principals'
//! bearer tokens and the access rules, kept by the cluster manager.

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use pubsub_proto::auth::{Operation, Resource, Rule};
use pubsub_proto::v1::{self, access_client::AccessClient};
use serde_json::json;

use super::GlobalArgs;
use super::output::{OutputFormat, Table};

/// `pubsub token ...`
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A cluster-manager node to ask [default: the first --server address].
    #[arg(long, env = "PUBSUB_CLUSTER_MANAGER", global = true)]
    pub cluster_manager: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token for a principal and prints it (once: only its hash is kept).
    Create {
        /// The principal (a user or application), created on first use.
        #[arg(long)]
        principal: String,
        /// Lifetime, like 30d or 12h [default: no expiry].
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// Prints a new random token without asking any server: the first admin token of
    /// a cluster, kept in a secret store and given with --admin-token-file.
    Generate,
    /// Lists tokens (ids, principals, expiry; never the secrets).
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revokes every token of a principal, or one token by id.
    #[command(group(ArgGroup::new("which").required(true).args(["principal", "id"])))]
    Revoke {
        /// Every token of this principal.
        #[arg(long)]
        principal: Option<String>,
        /// The token with this id.
        #[arg(long)]
        id: Option<String>,
    },
}

/// `pubsub acl ...`
#[derive(Debug, Args)]
pub struct AclArgs {
    /// A cluster-manager node to ask [default: the first --server address].
    #[arg(long, env = "PUBSUB_CLUSTER_MANAGER", global = true)]
    pub cluster_manager: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: AclCommand,
}

/// The acl subcommands.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allows a principal an operation on a resource.
    Add(RuleArgs),
    /// Removes a rule added before.
    Remove(RuleArgs),
    /// Lists rules.
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
    },
}

/// One rule on the command line.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("resource").required(true).args(
    ["topic", "topic_prefix", "subscription", "subscription_prefix", "cluster"]
)))]
pub struct RuleArgs {
    /// Who it applies to.
    #[arg(long)]
    pub principal: String,
    /// One topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Every topic whose name starts with this.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// One subscription (or group).
    #[arg(long)]
    pub subscription: Option<String>,
    /// Every subscription whose name starts with this.
    #[arg(long)]
    pub subscription_prefix: Option<String>,
    /// Everything (admin on the cluster also manages tokens and rules).
    #[arg(long)]
    pub cluster: bool,
    /// produce, consume, admin or describe (admin implies the others; produce and
    /// consume imply describe).
    #[arg(long)]
    pub operation: Operation,
}

impl RuleArgs {
    fn rule(self) -> v1::AclRule {
        let resource = match self {
            RuleArgs { topic: Some(t), .. } => Resource::Topic(t),
            RuleArgs {
                topic_prefix: Some(p),
                ..
            } => Resource::TopicPrefix(p),
            RuleArgs {
                subscription: Some(s),
                ..
            } => Resource::Subscription(s),
            RuleArgs {
                subscription_prefix: Some(p),
                ..
            } => Resource::SubscriptionPrefix(p),
            _ => Resource::Cluster,
        };
        Rule {
            principal: self.principal,
            resource,
            operation: self.operation,
        }
        .to_wire()
    }
}

fn stub(
    global: &GlobalArgs,
    explicit: Option<&str>,
) -> anyhow::Result<AccessClient<pubsub_proto::net::Channel>> {
    let address = global.cluster_manager_address(explicit);
    Ok(AccessClient::new(global.channel(&address)?))
}

/// The status as one line a person can act on.
fn failed(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// Runs `pubsub token ...`.
pub async fn token(global: &GlobalArgs, args: TokenArgs) -> anyhow::Result<()> {
    if let TokenCommand::Generate = args.command {
        println!("{}", pubsub_proto::auth::generate_token().token);
        return Ok(());
    }
    let mut stub = stub(global, args.cluster_manager.as_deref())?;
    match args.command {
        TokenCommand::Create { principal, expires } => {
            let expires_in_ms = expires.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let created = stub
                .create_token(v1::CreateTokenRequest {
                    principal,
                    expires_in_ms,
                })
                .await
                .map_err(failed)?
                .into_inner();
            match global.output {
                OutputFormat::Json => println!(
                    "{}",
                    json!({"token": created.token, "id": created.info.map(|i| i.id)})
                ),
                OutputFormat::Text => {
                    println!("{}", created.token);
                    if !global.quiet {
                        eprintln!(
                            "keep this token safe: it is not stored and cannot be shown again"
                        );
                    }
                }
            }
        }
        TokenCommand::List { principal } => {
            let tokens = stub
                .list_tokens(v1::ListTokensRequest {
                    principal: principal.unwrap_or_default(),
                })
                .await
                .map_err(failed)?
                .into_inner()
                .tokens;
            print_tokens(global.output, &tokens);
        }
        TokenCommand::Generate => {}
        TokenCommand::Revoke { principal, id } => {
            use v1::revoke_tokens_request::Target;
            let target = match (principal, id) {
                (Some(p), _) => Target::Principal(p),
                (None, Some(i)) => Target::Id(i),
                (None, None) => anyhow::bail!("give --principal or --id"),
            };
            let revoked = stub
                .revoke_tokens(v1::RevokeTokensRequest {
                    target: Some(target),
                })
                .await
                .map_err(failed)?
                .into_inner()
                .revoked;
            println!("revoked {revoked} token(s)");
        }
    }
    Ok(())
}

fn print_tokens(output: OutputFormat, tokens: &[v1::TokenInfo]) {
    match output {
        OutputFormat::Json => {
            let list: Vec<_> = tokens
                .iter()
                .map(|t| json!({"id": t.id, "principal": t.principal, "created_ms": t.created_ms, "expires_ms": t.expires_ms}))
                .collect();
            println!("{}", json!(list));
        }
        OutputFormat::Text => {
            let mut table = Table::new(&["ID", "PRINCIPAL", "CREATED", "EXPIRES"]);
            for t in tokens {
                table.row(vec![
                    t.id.clone(),
                    t.principal.clone(),
                    time(t.created_ms),
                    t.expires_ms.map_or_else(|| "never".to_string(), time),
                ]);
            }
            print!("{}", table.render());
        }
    }
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Runs `pubsub acl ...`.
pub async fn acl(global: &GlobalArgs, args: AclArgs) -> anyhow::Result<()> {
    let mut stub = stub(global, args.cluster_manager.as_deref())?;
    match args.command {
        AclCommand::Add(rule) => {
            let added = stub
                .add_acl(v1::AddAclRequest {
                    rule: Some(rule.rule()),
                })
                .await
                .map_err(failed)?
                .into_inner()
                .added;
            println!(
                "{}",
                if added {
                    "rule added"
                } else {
                    "rule exists already"
                }
            );
        }
        AclCommand::Remove(rule) => {
            stub.remove_acl(v1::RemoveAclRequest {
                rule: Some(rule.rule()),
            })
            .await
            .map_err(failed)?;
            println!("rule removed");
        }
        AclCommand::List { principal } => {
            let rules = stub
                .list_acls(v1::ListAclsRequest {
                    principal: principal.unwrap_or_default(),
                })
                .await
                .map_err(failed)?
                .into_inner()
                .rules;
            print_rules(global.output, &rules);
        }
    }
    Ok(())
}

fn print_rules(output: OutputFormat, rules: &[v1::AclRule]) {
    let rules: Vec<Rule> = rules
        .iter()
        .filter_map(|r| Rule::from_wire(r).ok())
        .collect();
    match output {
        OutputFormat::Json => {
            let list: Vec<_> = rules
                .iter()
                .map(|r| json!({"principal": r.principal, "resource": r.resource.to_string(), "operation": r.operation.as_str()}))
                .collect();
            println!("{}", json!(list));
        }
        OutputFormat::Text => {
            let mut table = Table::new(&["PRINCIPAL", "OPERATION", "RESOURCE"]);
            for r in &rules {
                table.row(vec![
                    r.principal.clone(),
                    r.operation.to_string(),
                    r.resource.to_string(),
                ]);
            }
            print!("{}", table.render());
        }
    }
}
