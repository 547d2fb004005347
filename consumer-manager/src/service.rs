//! The ConsumerManager gRPC service: requests checked and mapped onto the
//! [`Manager`](crate::manager::Manager) serving, through the [`Supervisor`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pubsub_proto::auth::{self, Operation, Target};
use pubsub_proto::v1::{self, consumer_manager_server::ConsumerManager as Rpc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::manager::Caller;
use crate::subscription::Mode;
use crate::supervisor::Supervisor;

/// Most record ids one Ack or Nack may carry.
const MAX_IDS: usize = 100_000;

/// The gRPC face of the supervised consumer manager: each request runs on the
/// manager serving when it arrives (UNAVAILABLE while one is reloaded from disk).
#[derive(Clone)]
pub struct ConsumerManagerService {
    supervisor: Arc<Supervisor>,
}

impl ConsumerManagerService {
    /// Serves the managers `supervisor` keeps.
    pub fn new(supervisor: Arc<Supervisor>) -> Self {
        ConsumerManagerService { supervisor }
    }

    /// OK if `caller` may do `operation` on the subscription `name` and read its topic
    /// (a subscription's records are readable only with consume on its topic).
    async fn authorize_subscription(
        &self,
        caller: &auth::Caller,
        operation: Operation,
        name: &str,
    ) -> std::result::Result<(), Status> {
        caller.authorize(operation, Target::Subscription(name))?;
        if matches!(caller.identity(), auth::Identity::Principal { .. }) {
            let topic = self
                .supervisor
                .serve(|manager| async move { Ok(manager.subscription(name)?.topic.clone()) })
                .await?;
            let needed = if operation == Operation::Describe {
                Operation::Describe
            } else {
                Operation::Consume
            };
            caller.authorize(needed, Target::Topic(&topic))?;
        }
        Ok(())
    }
}

fn address<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// Who calls: the member id the request names, and where it connects from.
fn caller<T>(request: &Request<T>, member_id: &str) -> Caller {
    Caller {
        member_id: member_id.to_string(),
        address: address(request),
    }
}

fn ids(records: &[v1::RecordId]) -> Result<Vec<(u32, u64)>> {
    if records.len() > MAX_IDS {
        return Err(Error::TooManyIds {
            count: records.len(),
            max: MAX_IDS,
        });
    }
    Ok(records.iter().map(|r| (r.partition, r.offset)).collect())
}

type StreamOf<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Rpc for ConsumerManagerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, subscription = %request.get_ref().subscription))]
    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<v1::SubscribeResponse>, Status> {
        auth::authorize(
            &request,
            Operation::Consume,
            Target::Topic(&request.get_ref().topic),
        )?;
        let subscription = Target::Subscription(&request.get_ref().subscription);
        auth::authorize(&request, Operation::Consume, subscription)?;
        let request = request.into_inner();
        let response = self
            .supervisor
            .serve(|manager| async move {
                let (subscription, created) = manager
                    .subscribe(
                        &request.topic,
                        &request.subscription,
                        request.options.as_ref(),
                    )
                    .await?;
                Ok(v1::SubscribeResponse {
                    subscription: Some(manager.describe(&subscription).await),
                    created,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, subscription = %request.get_ref().subscription))]
    async fn unsubscribe(
        &self,
        request: Request<v1::UnsubscribeRequest>,
    ) -> Result<Response<v1::UnsubscribeResponse>, Status> {
        let subscription = Target::Subscription(&request.get_ref().subscription);
        auth::authorize(&request, Operation::Admin, subscription)?;
        let request = request.into_inner();
        self.supervisor
            .serve(|manager| async move {
                manager
                    .unsubscribe(&request.topic, &request.subscription)
                    .await
            })
            .await?;
        Ok(Response::new(v1::UnsubscribeResponse {}))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic))]
    async fn list_subscriptions(
        &self,
        request: Request<v1::ListSubscriptionsRequest>,
    ) -> Result<Response<v1::ListSubscriptionsResponse>, Status> {
        let visible = auth::caller(&request);
        let request = request.into_inner();
        let answer = self
            .supervisor
            .serve(|manager| async move {
                // The partitions claimed are read with the subscriptions, so an
                // answer never claims one whose subscriptions it lacks.
                let (all, grant) = manager.served();
                let mut chosen = if request.subscription.is_empty() {
                    all
                } else {
                    vec![manager.subscription(&request.subscription)?]
                };
                chosen.retain(|s| request.topic.is_empty() || s.topic == request.topic);
                chosen.retain(|s| {
                    visible.may(Operation::Describe, Target::Subscription(&s.name))
                        && visible.may(Operation::Describe, Target::Topic(&s.topic))
                });
                chosen.sort_by(|a, b| a.name.cmp(&b.name));
                let mut subscriptions = Vec::with_capacity(chosen.len());
                for subscription in chosen {
                    subscriptions.push(manager.describe(&subscription).await);
                }
                let every = 0..pubsub_proto::ids::SUBSCRIPTION_STATE_PARTITIONS;
                let served =
                    grant.map_or_else(|| every.collect(), |g| g.partitions().into_iter().collect());
                Ok((subscriptions, served))
            })
            .await?;
        let (subscriptions, journal_partitions) = answer;
        let ownership = self.supervisor.config().ownership.as_ref();
        let others = ownership.map(|o| o.other_owners()).unwrap_or_default();
        Ok(Response::new(v1::ListSubscriptionsResponse {
            subscriptions,
            other_consumer_managers: others.into_iter().collect(),
            journal_partitions,
        }))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription))]
    async fn join_group(
        &self,
        request: Request<v1::JoinGroupRequest>,
    ) -> Result<Response<v1::JoinGroupResponse>, Status> {
        let name = &request.get_ref().subscription;
        self.authorize_subscription(&auth::caller(&request), Operation::Consume, name)
            .await?;
        let caller = caller(&request, &request.get_ref().member_id);
        let request = request.into_inner();
        let joined = self
            .supervisor
            .serve(|manager| async move {
                let subscription = manager.subscription(&request.subscription)?;
                if !subscription.options.group {
                    return Err(Error::NotAGroup {
                        name: request.subscription,
                    });
                }
                manager
                    .join(&request.subscription, &caller, Mode::Pull)
                    .await
            })
            .await?;
        Ok(Response::new(joined))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription))]
    async fn leave_group(
        &self,
        request: Request<v1::LeaveGroupRequest>,
    ) -> Result<Response<v1::LeaveGroupResponse>, Status> {
        let name = &request.get_ref().subscription;
        self.authorize_subscription(&auth::caller(&request), Operation::Consume, name)
            .await?;
        let request = request.into_inner();
        self.supervisor
            .serve(|manager| async move {
                manager
                    .leave(&request.subscription, &request.member_id)
                    .await
            })
            .await?;
        Ok(Response::new(v1::LeaveGroupResponse {}))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription))]
    async fn read(
        &self,
        request: Request<v1::ReadRequest>,
    ) -> Result<Response<v1::ReadResponse>, Status> {
        let name = &request.get_ref().subscription;
        self.authorize_subscription(&auth::caller(&request), Operation::Consume, name)
            .await?;
        let caller = caller(&request, &request.get_ref().member_id);
        let request = request.into_inner();
        let delivery = self
            .supervisor
            .serve(|manager| async move {
                manager
                    .read(
                        &request.subscription,
                        &caller,
                        request.generation,
                        request.max_records.max(1) as usize,
                        Duration::from_millis(u64::from(request.max_wait_ms)),
                    )
                    .await
            })
            .await?;
        Ok(Response::new(v1::ReadResponse {
            records: delivery.records,
            skipped: delivery.skipped,
        }))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription))]
    async fn ack(
        &self,
        request: Request<v1::AckRequest>,
    ) -> Result<Response<v1::AckResponse>, Status> {
        let name = &request.get_ref().subscription;
        self.authorize_subscription(&auth::caller(&request), Operation::Consume, name)
            .await?;
        let caller = caller(&request, &request.get_ref().member_id);
        let request = request.into_inner();
        let ids = ids(&request.records)?;
        self.supervisor
            .serve(|manager| async move {
                manager
                    .ack(&request.subscription, &caller, request.generation, &ids)
                    .await
            })
            .await?;
        Ok(Response::new(v1::AckResponse {}))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription))]
    async fn nack(
        &self,
        request: Request<v1::NackRequest>,
    ) -> Result<Response<v1::NackResponse>, Status> {
        let name = &request.get_ref().subscription;
        self.authorize_subscription(&auth::caller(&request), Operation::Consume, name)
            .await?;
        let caller = caller(&request, &request.get_ref().member_id);
        let request = request.into_inner();
        let ids = ids(&request.records)?;
        self.supervisor
            .serve(|manager| async move {
                manager
                    .nack(&request.subscription, &caller, request.generation, &ids)
                    .await
            })
            .await?;
        Ok(Response::new(v1::NackResponse {}))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription, partition = request.get_ref().partition))]
    async fn commit(
        &self,
        request: Request<v1::CommitRequest>,
    ) -> Result<Response<v1::CommitResponse>, Status> {
        let name = &request.get_ref().subscription;
        self.authorize_subscription(&auth::caller(&request), Operation::Consume, name)
            .await?;
        let caller = caller(&request, &request.get_ref().member_id);
        let request = request.into_inner();
        self.supervisor
            .serve(|manager| async move {
                manager
                    .commit(
                        &request.subscription,
                        &caller,
                        request.generation,
                        request.partition,
                        request.offset,
                    )
                    .await
            })
            .await?;
        Ok(Response::new(v1::CommitResponse {}))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription))]
    async fn seek(
        &self,
        request: Request<v1::SeekRequest>,
    ) -> Result<Response<v1::SeekResponse>, Status> {
        let name = &request.get_ref().subscription;
        self.authorize_subscription(&auth::caller(&request), Operation::Consume, name)
            .await?;
        let request = request.into_inner();
        let Some(target) = request.target else {
            return Err(Error::MissingChoice {
                call: "seek",
                choices: "offset, earliest, latest or timestamp_ms",
            }
            .into());
        };
        let partitions = self
            .supervisor
            .serve(|manager| async move {
                manager
                    .seek(&request.subscription, request.partition, target)
                    .await
            })
            .await?;
        Ok(Response::new(v1::SeekResponse { partitions }))
    }

    type StreamStream = StreamOf<v1::StreamResponse>;

    async fn stream(
        &self,
        request: Request<Streaming<v1::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let address = address(&request);
        let who = auth::caller(&request);
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or(Error::StreamNotOpened { ended: true })?;
        let Some(v1::stream_request::Kind::Open(open)) = first.kind else {
            return Err(Error::StreamNotOpened { ended: false }.into());
        };
        self.authorize_subscription(&who, Operation::Consume, &open.subscription)
            .await?;
        // The stream's tasks hold the manager past this call, and end with it.
        let receiver = self
            .supervisor
            .serve(|manager| crate::stream::open(manager, open, address, inbound))
            .await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic))]
    async fn presence(
        &self,
        request: Request<v1::PresenceRequest>,
    ) -> Result<Response<v1::PresenceResponse>, Status> {
        let who = auth::caller(&request);
        if !request.get_ref().topic.is_empty() {
            who.authorize(Operation::Describe, Target::Topic(&request.get_ref().topic))?;
        }
        if !request.get_ref().subscription.is_empty() {
            let name = &request.get_ref().subscription;
            self.authorize_subscription(&who, Operation::Describe, name)
                .await?;
        } else if request.get_ref().topic.is_empty() {
            who.authorize(Operation::Describe, Target::Cluster)?;
        }
        let request = request.into_inner();
        let members = self
            .supervisor
            .serve(|manager| async move {
                if !request.subscription.is_empty() {
                    manager.subscription(&request.subscription)?;
                }
                manager.presence(&request.topic, &request.subscription)
            })
            .await?;
        Ok(Response::new(v1::PresenceResponse { members }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic))]
    async fn history(
        &self,
        request: Request<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryResponse>, Status> {
        auth::authorize(
            &request,
            Operation::Consume,
            Target::Topic(&request.get_ref().topic),
        )?;
        let request = request.into_inner();
        let partitions = self
            .supervisor
            .serve(|manager| async move { manager.history(&request).await })
            .await?;
        Ok(Response::new(v1::HistoryResponse { partitions }))
    }

    #[tracing::instrument(skip_all, fields(subscription = %request.get_ref().subscription))]
    async fn replay_dead_letters(
        &self,
        request: Request<v1::ReplayDeadLettersRequest>,
    ) -> Result<Response<v1::ReplayDeadLettersResponse>, Status> {
        let subscription = Target::Subscription(&request.get_ref().subscription);
        auth::authorize(&request, Operation::Admin, subscription)?;
        let request = request.into_inner();
        let replayed = self
            .supervisor
            .serve(|manager| async move {
                manager
                    .replay_dead_letters(&request.subscription, request.max_records)
                    .await
            })
            .await?;
        Ok(Response::new(v1::ReplayDeadLettersResponse { replayed }))
    }
}
