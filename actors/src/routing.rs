//! Routing: which route takes a message, and which of the route's carriers
//! carries it. Pure logic, no I/O: the route actor holds a [`Picker`] and
//! the carriers' usability as reported by their connections.
//!
//! A route matches by channel, destination prefix (the longest matching
//! prefix wins: country `+250`, then network `+25078`) and optionally
//! tenant (a tenant-specific route beats a general one of equal prefix).

use herald_carriers::Channel;

use crate::config::{RouteSpec, Strategy};

/// Finds the route for a message.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<RouteSpec>,
}

impl Router {
    pub fn new(routes: Vec<RouteSpec>) -> Self {
        Self { routes }
    }

    /// The best route for this channel, destination and tenant, if any.
    pub fn route(&self, channel: Channel, to: &str, tenant: &str) -> Option<&RouteSpec> {
        self.routes
            .iter()
            .filter(|r| r.channel == channel)
            .filter(|r| r.tenant.as_deref().is_none_or(|t| t == tenant))
            .filter_map(|r| {
                let best = r
                    .prefixes
                    .iter()
                    .filter(|p| to.starts_with(p.as_str()))
                    .map(|p| p.len())
                    .max()?;
                Some((best, r.tenant.is_some(), r))
            })
            .max_by_key(|(len, specific, _)| (*len, *specific))
            .map(|(_, _, r)| r)
    }
}

/// Chooses a carrier within one route.
#[derive(Debug, Clone)]
pub struct Picker {
    strategy: Strategy,
    carriers: Vec<String>,
    weights: Vec<u32>,
    /// Smooth weighted round robin state (nginx's algorithm): deterministic,
    /// spreads evenly, follows the weights exactly over a cycle.
    current: Vec<i64>,
}

impl Picker {
    pub fn new(spec: &RouteSpec) -> Self {
        let weights = if spec.strategy == Strategy::Weighted {
            spec.weights.clone()
        } else {
            vec![1; spec.carriers.len()]
        };
        Self {
            strategy: spec.strategy,
            carriers: spec.carriers.clone(),
            current: vec![0; spec.carriers.len()],
            weights,
        }
    }

    pub fn carriers(&self) -> &[String] {
        &self.carriers
    }

    /// Pick a carrier among those `usable` and not excluded. When none is
    /// usable, the first not excluded (its queue holds the message until the
    /// carrier is back): a message is never failed for a carrier being down.
    /// `None` only when every carrier is excluded.
    pub fn pick(&mut self, usable: impl Fn(&str) -> bool, exclude: &[String]) -> Option<String> {
        let allowed: Vec<usize> = (0..self.carriers.len())
            .filter(|&i| !exclude.contains(&self.carriers[i]))
            .collect();
        let candidates: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|&i| usable(&self.carriers[i]))
            .collect();
        if candidates.is_empty() {
            return allowed.first().map(|&i| self.carriers[i].clone());
        }
        let chosen = match self.strategy {
            Strategy::Failover => candidates[0],
            Strategy::Weighted => {
                let total: i64 = candidates.iter().map(|&i| i64::from(self.weights[i])).sum();
                let mut best = candidates[0];
                for &i in &candidates {
                    self.current[i] += i64::from(self.weights[i]);
                    if self.current[i] > self.current[best] {
                        best = i;
                    }
                }
                self.current[best] -= total;
                best
            }
        };
        Some(self.carriers[chosen].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, prefixes: &[&str], tenant: Option<&str>) -> RouteSpec {
        RouteSpec {
            id: id.into(),
            channel: Channel::Sms,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            tenant: tenant.map(str::to_owned),
            strategy: Strategy::Failover,
            carriers: vec!["a".into(), "b".into()],
            weights: vec![],
        }
    }

    #[test]
    fn longest_prefix_wins_and_tenant_routes_beat_general_ones() {
        let router = Router::new(vec![
            route("rw", &["+250"], None),
            route("rw-mtn", &["+25078", "+25079"], None),
            route("ug", &["+256"], None),
            route("rw-vip", &["+250"], Some("tnt_vip")),
        ]);
        let r = |to: &str, t: &str| router.route(Channel::Sms, to, t).map(|r| r.id.clone());
        assert_eq!(r("+250788123456", "tnt_x").as_deref(), Some("rw-mtn"));
        assert_eq!(r("+250728123456", "tnt_x").as_deref(), Some("rw"));
        assert_eq!(r("+250728123456", "tnt_vip").as_deref(), Some("rw-vip"));
        assert_eq!(r("+250788123456", "tnt_vip").as_deref(), Some("rw-mtn"));
        assert_eq!(r("+256772123456", "tnt_x").as_deref(), Some("ug"));
        assert_eq!(r("+243812345678", "tnt_x"), None);
        assert!(router.route(Channel::Voice, "+250788123456", "t").is_none());
    }

    #[test]
    fn failover_takes_the_first_usable_and_queues_when_none_is() {
        let mut p = Picker::new(&route("r", &["+250"], None));
        assert_eq!(p.pick(|_| true, &[]).as_deref(), Some("a"));
        assert_eq!(p.pick(|c| c != "a", &[]).as_deref(), Some("b"));
        assert_eq!(p.pick(|_| false, &[]).as_deref(), Some("a"));
        assert_eq!(p.pick(|_| true, &["a".into()]).as_deref(), Some("b"));
        assert_eq!(p.pick(|_| true, &["a".into(), "b".into()]), None);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let mut spec = route("r", &["+250"], None);
        spec.strategy = Strategy::Weighted;
        spec.carriers = vec!["a".into(), "b".into(), "c".into()];
        spec.weights = vec![5, 3, 2];
        let mut p = Picker::new(&spec);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..1000 {
            *counts.entry(p.pick(|_| true, &[]).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 500);
        assert_eq!(counts["b"], 300);
        assert_eq!(counts["c"], 200);
        // An unusable carrier's share goes to the others.
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100 {
            *counts
                .entry(p.pick(|c| c != "a", &[]).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.get("a"), None);
        assert_eq!(counts["b"] + counts["c"], 100);
    }
}
