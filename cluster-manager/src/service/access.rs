//! The `Access` service: tokens and access rules, changed through Raft like every
//! other piece of metadata, and watched by the nodes that check calls.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use pubsub_proto::auth::{self, Operation, Rule, Target, authorize};
use pubsub_proto::v1::{self, access_server::Access};
use tonic::{Request, Response, Status};

use crate::command::{Command, Response as Applied};
use crate::manager::{Manager, now_ms};

/// The `Access` service of one node.
pub struct AccessService {
    manager: Arc<Manager>,
}

impl AccessService {
    /// Serves tokens and rules from `manager`'s node.
    pub fn new(manager: Arc<Manager>) -> Self {
        AccessService { manager }
    }

    /// Commits `command` and waits until this node applied it.
    async fn write(&self, command: Command) -> Result<Applied, Status> {
        let written = self.manager.write(command).await?;
        self.manager.wait_applied(written.log_index).await?;
        Ok(written.response)
    }
}

/// The stream type of `WatchAccess`.
type AccessStream = Pin<Box<dyn Stream<Item = Result<v1::AccessControl, Status>> + Send>>;

fn rule_of(rule: Option<v1::AclRule>) -> Result<Rule, Status> {
    let rule = rule.ok_or_else(|| Status::invalid_argument("the request has no rule"))?;
    Rule::from_wire(&rule).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn principal_filter(principal: &str) -> Option<&str> {
    Some(principal).filter(|p| !p.is_empty())
}

#[tonic::async_trait]
impl Access for AccessService {
    #[tracing::instrument(skip_all, fields(principal = %request.get_ref().principal))]
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let request = request.into_inner();
        auth::validate_principal(&request.principal)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = now_ms();
        let expires_ms =
            match request.expires_in_ms.filter(|ms| *ms > 0) {
                Some(ms) => Some(now.checked_add(ms).ok_or_else(|| {
                    Status::invalid_argument("the expiry is too far in the future")
                })?),
                None => None,
            };
        let token = auth::generate_token();
        self.write(Command::CreateToken {
            id: token.id.clone(),
            principal: request.principal.clone(),
            hash: token.hash,
            expires_ms,
            now_ms: 0,
        })
        .await?;
        tracing::info!(id = %token.id, "token created");
        let info = self
            .manager
            .view()
            .state
            .access()
            .token_infos(Some(&request.principal))
            .into_iter()
            .find(|t| t.id == token.id);
        Ok(Response::new(v1::CreateTokenResponse {
            token: token.token,
            info,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let view = self.manager.view();
        let principal = principal_filter(&request.get_ref().principal);
        let tokens = view.state.access().token_infos(principal);
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_tokens(
        &self,
        request: Request<v1::RevokeTokensRequest>,
    ) -> Result<Response<v1::RevokeTokensResponse>, Status> {
        use v1::revoke_tokens_request::Target as By;
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let (principal, id) = match request.into_inner().target {
            Some(By::Principal(principal)) => (Some(principal), None),
            Some(By::Id(id)) => (None, Some(id)),
            None => {
                return Err(Status::invalid_argument(
                    "revoke by principal or by token id",
                ));
            }
        };
        let applied = self.write(Command::RevokeTokens { principal, id }).await?;
        let revoked = match applied {
            Applied::AccessChanged { count } => count,
            _ => 0,
        };
        tracing::info!(revoked, "tokens revoked");
        Ok(Response::new(v1::RevokeTokensResponse { revoked }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_acl(
        &self,
        request: Request<v1::AddAclRequest>,
    ) -> Result<Response<v1::AddAclResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let rule = rule_of(request.into_inner().rule)?;
        tracing::info!(principal = %rule.principal, operation = %rule.operation, resource = %rule.resource, "access rule added");
        let applied = self.write(Command::AddAcl { rule }).await?;
        let added = matches!(applied, Applied::AccessChanged { count: 1 });
        Ok(Response::new(v1::AddAclResponse { added }))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_acl(
        &self,
        request: Request<v1::RemoveAclRequest>,
    ) -> Result<Response<v1::RemoveAclResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let rule = rule_of(request.into_inner().rule)?;
        tracing::info!(principal = %rule.principal, operation = %rule.operation, resource = %rule.resource, "access rule removed");
        self.write(Command::RemoveAcl { rule }).await?;
        Ok(Response::new(v1::RemoveAclResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_acls(
        &self,
        request: Request<v1::ListAclsRequest>,
    ) -> Result<Response<v1::ListAclsResponse>, Status> {
        authorize(&request, Operation::Admin, Target::Cluster)?;
        let view = self.manager.view();
        let rules = view
            .state
            .access()
            .rules(principal_filter(&request.get_ref().principal));
        Ok(Response::new(v1::ListAclsResponse { rules }))
    }

    type WatchAccessStream = AccessStream;

    #[tracing::instrument(skip_all)]
    async fn watch_access(
        &self,
        request: Request<v1::WatchAccessRequest>,
    ) -> Result<Response<Self::WatchAccessStream>, Status> {
        auth::caller(&request).require_node("watch the access rules")?;
        Ok(Response::new(super::watch(
            self.manager.clone(),
            |view, _| view.state.access().to_wire(view.applied_index),
        )))
    }
}
