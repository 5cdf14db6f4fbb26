//! Admin calls of the auto-approval policy (docs/protocol.md §9 "Policy"):
//! rules, the dry run, enrollment windows.

use idprov_proto::admin::paths::{RULES, RULES_DRY_RUN, WINDOWS};
use idprov_proto::policy::{
    DryRunRequest, DryRunResult, Rule, RuleAdd, RuleList, RuleMove, RuleName, RuleReplace,
    RulesReplace, WindowList, WindowOpen, WindowView,
};
use reqwest::Method;

use crate::{AdminClient, AdminError};

impl AdminClient {
    pub async fn rules(&self) -> Result<RuleList, AdminError> {
        self.call::<(), _>(Method::GET, RULES, None, None).await
    }
    /// Add `rule` at `position` (last when `None`) on `revision`.
    pub async fn rule_add(
        &self,
        revision: u64,
        rule: Rule,
        position: Option<usize>,
    ) -> Result<RuleList, AdminError> {
        let body = RuleAdd {
            revision,
            rule,
            position,
        };
        self.call(Method::POST, RULES, None, Some(&body)).await
    }
    pub async fn rule_replace(
        &self,
        revision: u64,
        name: &RuleName,
        rule: Rule,
    ) -> Result<RuleList, AdminError> {
        let body = RuleReplace { revision, rule };
        self.call(Method::PUT, &format!("{RULES}/{name}"), None, Some(&body))
            .await
    }
    pub async fn rule_delete(
        &self,
        revision: u64,
        name: &RuleName,
    ) -> Result<RuleList, AdminError> {
        let path = format!("{RULES}/{name}?revision={revision}");
        self.call::<(), _>(Method::DELETE, &path, None, None).await
    }
    pub async fn rule_move(
        &self,
        revision: u64,
        name: &RuleName,
        position: usize,
    ) -> Result<RuleList, AdminError> {
        let body = RuleMove { revision, position };
        let path = format!("{RULES}/{name}/move");
        self.call(Method::POST, &path, None, Some(&body)).await
    }
    pub async fn rules_replace(
        &self,
        revision: u64,
        rules: Vec<Rule>,
    ) -> Result<RuleList, AdminError> {
        let body = RulesReplace { revision, rules };
        self.call(Method::PUT, RULES, None, Some(&body)).await
    }
    pub async fn rules_dry_run(&self, req: &DryRunRequest) -> Result<DryRunResult, AdminError> {
        self.call(Method::POST, RULES_DRY_RUN, None, Some(req))
            .await
    }
    pub async fn windows(&self) -> Result<WindowList, AdminError> {
        self.call::<(), _>(Method::GET, WINDOWS, None, None).await
    }
    pub async fn window_open(&self, req: &WindowOpen) -> Result<WindowView, AdminError> {
        self.call(Method::POST, WINDOWS, None, Some(req)).await
    }
    pub async fn window_close(&self, id: u64) -> Result<WindowView, AdminError> {
        self.call::<(), _>(Method::DELETE, &format!("{WINDOWS}/{id}"), None, None)
            .await
    }
}
