//! Membership: joining and leaving (a group's generation and assignment move with
//! each change), and ending the sessions of members not heard from. A new generation
//! is durable before any member hears of it, so none is handed out twice, even
//! across a restart.

use std::time::Instant;

use pubsub_proto::v1;

use crate::error::Result;
use crate::manager::{Caller, Manager};
use crate::subscription::Mode;

impl Manager {
    /// Joins a group (or renews a membership): member id, generation, partitions.
    pub async fn join(
        &self,
        name: &str,
        caller: &Caller,
        mode: Mode,
    ) -> Result<v1::JoinGroupResponse> {
        let subscription = self.subscription(name)?;
        let member_id = if caller.member_id.is_empty() {
            format!("{}-{:016x}", mode.as_str(), rand::random::<u64>())
        } else {
            caller.member_id.clone()
        };
        let group = subscription.options.group;
        let (response, rebalanced) = self.write_unflushed(&subscription, |state, writes| {
            let (_, new) = state.touch(&member_id, &caller.address, mode, || self.new_holder());
            let rebalanced = new && group;
            if rebalanced {
                state.rebalance(subscription.partitions());
                tracing::info!(subscription = %name, member = %member_id, generation = state.generation, "member joined; rebalanced");
                writes.record();
            }
            let response = v1::JoinGroupResponse {
                partitions: state.eligible(group, &member_id, subscription.partitions()),
                member_id,
                generation: state.generation,
                session_timeout_ms: subscription.options.session_timeout_ms,
            };
            Ok((response, rebalanced))
        })?;
        if rebalanced {
            self.store().flush().await?;
            subscription.changed.notify_waiters();
        }
        Ok(response)
    }

    /// Removes a member now (leave, stream closed, session expired).
    pub async fn leave(&self, name: &str, member_id: &str) -> Result<()> {
        let subscription = self.subscription(name)?;
        let group = subscription.options.group;
        let rebalanced = self.write_unflushed(&subscription, |state, writes| {
            if !state.remove(member_id, group) || !group {
                return Ok(false);
            }
            state.rebalance(subscription.partitions());
            tracing::info!(subscription = %name, member = %member_id, generation = state.generation, "member left; rebalanced");
            writes.record();
            Ok(true)
        })?;
        subscription.changed.notify_waiters();
        if rebalanced {
            self.store().flush().await?;
        }
        Ok(())
    }

    /// Evicts members not heard from within their session timeout.
    pub async fn expire_members(&self) {
        for subscription in self.all() {
            let timeout = subscription.session_timeout();
            let expired = match subscription.lock() {
                Ok(state) => state.expired(timeout, Instant::now()),
                Err(_) => continue,
            };
            for member in expired {
                tracing::info!(subscription = %subscription.name, %member, "session expired");
                if let Err(e) = self.leave(&subscription.name, &member).await {
                    tracing::warn!(subscription = %subscription.name, error = %e, "cannot remove expired member");
                }
            }
        }
    }
}
