//! `[helo]`: the HELO/EHLO name checks and FCrDNS, each off, a reject or a
//! weight.

/// What to do when a check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Off,
    Reject,
    Score(i32),
}

impl Action {
    /// "off", "reject", or a weight ("2", "+2", "-1").
    pub fn parse(s: &str) -> Result<Action, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "" => Ok(Action::Off),
            "reject" => Ok(Action::Reject),
            w => w
                .trim_start_matches('+')
                .parse::<i32>()
                .map(Action::Score)
                .map_err(|_| format!("{s:?}: expected \"off\", \"reject\" or a weight like \"2\"")),
        }
    }
}

/// The configured actions.
#[derive(Debug, Clone, Default)]
pub struct HeloPolicy {
    /// HELO is a bare IP address ("1.2.3.4" instead of "[1.2.3.4]").
    pub bare_ip: Action,
    /// HELO has no dot ("localhost", "PC123").
    pub non_fqdn: Action,
    /// HELO claims to be us: our hostname or one of our addresses.
    pub our_name: Action,
    /// The client IP has no PTR whose name resolves back to it.
    pub fcrdns: Action,
}

impl HeloPolicy {
    pub fn uses_scores(&self) -> bool {
        [self.bare_ip, self.non_fqdn, self.our_name, self.fcrdns]
            .iter()
            .any(|a| matches!(a, Action::Score(_)))
    }
}

pub(super) fn validate_helo(h: super::raw::RawHelo) -> Result<HeloPolicy, super::ConfigError> {
    let action = |key: &str, v: Option<String>| -> Result<Action, super::ConfigError> {
        Action::parse(v.as_deref().unwrap_or(super::defaults::HELO_ACTION)).map_err(|e| super::ConfigError::new(key, e))
    };
    let helo = HeloPolicy {
        bare_ip: action("helo.bare_ip", h.bare_ip)?,
        non_fqdn: action("helo.non_fqdn", h.non_fqdn)?,
        our_name: action("helo.our_name", h.our_name)?,
        fcrdns: action("helo.fcrdns", h.fcrdns)?,
    };
    Ok(helo)
}
