//! Kube contexts: the kubeconfig as kubectl reads it, and one client per
//! context the user picked.

use anyhow::{anyhow, bail, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::PathBuf;
use std::time::Duration;

/// Which kubeconfig, contexts and identity to use (kubectl's own flags).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Else `KUBECONFIG`, else ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// Empty: the current context.
    pub contexts: Vec<String>,
    pub all_contexts: bool,
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub as_user: Option<String>,
    pub as_groups: Vec<String>,
    /// For each request that is not a stream.
    pub request_timeout: Option<Duration>,
}

/// One cluster to work in.
pub struct Ctx {
    pub name: String,
    pub client: Client,
    /// The context's namespace, else "default": where targets are looked up without -n.
    pub default_namespace: String,
}

/// Reads the kubeconfig like kubectl: `--kubeconfig`, else `KUBECONFIG` (several
/// paths merged, first wins), else ~/.kube/config.
fn read_kubeconfig(flags: &Connection) -> Result<Kubeconfig> {
    let read = match &flags.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    read.map_err(|e| {
        anyhow!(
            "cannot read the kubeconfig: {e}; point --kubeconfig or KUBECONFIG at a valid one (or use --pid / -- CMD to trace on this machine)"
        )
    })
}

/// The context names to use: `--context` as given, every context with
/// `--all-contexts`, else the current one.
fn pick_contexts(kubeconfig: &Kubeconfig, flags: &Connection) -> Result<Vec<String>> {
    let known: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if flags.all_contexts {
        if known.is_empty() {
            bail!("--all-contexts: the kubeconfig has no contexts");
        }
        return Ok(known.iter().map(|s| s.to_string()).collect());
    }
    if flags.contexts.is_empty() {
        return match &kubeconfig.current_context {
            Some(c) if !c.is_empty() => Ok(vec![c.clone()]),
            _ => bail!(
                "the kubeconfig has no current context: pass --context NAME (known: {})",
                known.join(", ")
            ),
        };
    }
    let mut picked = Vec::new();
    for c in &flags.contexts {
        if !known.contains(&c.as_str()) {
            bail!(
                "context {c:?} is not in the kubeconfig (known: {})",
                known.join(", ")
            );
        }
        if !picked.contains(c) {
            picked.push(c.clone());
        }
    }
    Ok(picked)
}

pub async fn connect(flags: &Connection) -> Result<Vec<Ctx>> {
    let kubeconfig = read_kubeconfig(flags)?;
    let mut out = Vec::new();
    for name in pick_contexts(&kubeconfig, flags)? {
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            cluster: flags.cluster.clone(),
            user: flags.user.clone(),
        };
        let mut config = Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .map_err(|e| anyhow!("context {name}: {e}"))?;
        if let Some(user) = &flags.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !flags.as_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(flags.as_groups.clone());
        }
        if let Some(t) = flags.request_timeout {
            config.connect_timeout = Some(t);
        }
        // Log streams are quiet for as long as the traced maps are: no read
        // timeout. Requests that are not streams get --request-timeout.
        config.read_timeout = None;
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| anyhow!("context {name}: {e}"))?;
        out.push(Ctx {
            name,
            client,
            default_namespace,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(current: &str) -> Kubeconfig {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n- name: a\n  cluster: {{server: 'http://127.0.0.1:1'}}\ncontexts:\n- name: one\n  context: {{cluster: a}}\n- name: two\n  context: {{cluster: a}}\nusers: []\n"
        );
        Kubeconfig::from_yaml(&yaml).unwrap()
    }

    #[test]
    fn contexts_are_picked_like_kubectl() {
        let k = kubeconfig("two");
        let flags = |contexts: &[&str], all| Connection {
            contexts: contexts.iter().map(|s| s.to_string()).collect(),
            all_contexts: all,
            ..Default::default()
        };
        assert_eq!(pick_contexts(&k, &flags(&[], false)).unwrap(), ["two"]);
        assert_eq!(
            pick_contexts(&k, &flags(&[], true)).unwrap(),
            ["one", "two"]
        );
        assert_eq!(
            pick_contexts(&k, &flags(&["one", "one"], false)).unwrap(),
            ["one"]
        );
        let err = pick_contexts(&k, &flags(&["three"], false)).unwrap_err();
        assert!(err.to_string().contains("known: one, two"), "{err}");
        assert!(pick_contexts(&kubeconfig("''"), &flags(&[], false)).is_err());
    }
}
