//! Credentials and settings, read from environment variables with documented dev defaults.

/// One environment variable the mock reads: its name, the dev default and what it is for.
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub purpose: &'static str,
}

/// Every variable, in the order the README lists them.
pub const VARS: &[Var] = &[
    var(
        "MOCK_SIEM_TOKEN",
        "siem-dev-token",
        "Bearer token for /siem",
    ),
    var("MOCK_TI_KEY", "ti-dev-key", "X-API-Key for /ti"),
    var(
        "MOCK_IDP_TOKEN",
        "idp-dev-token",
        "Bearer token for /identity and /idp",
    ),
    var("MOCK_EDR_TOKEN", "edr-dev-token", "Bearer token for /edr"),
    var(
        "MOCK_GRC_TOKEN",
        "grc-dev-token",
        "Bearer token for /compliance",
    ),
    var(
        "MOCK_FW_TOKEN",
        "fw-dev-token",
        "Bearer token for /firewall",
    ),
    var("MOCK_SNOW_USER", "vigil", "Basic auth user for /api/now"),
    var(
        "MOCK_SNOW_PASSWORD",
        "snow-dev-password",
        "Basic auth password for /api/now",
    ),
    var(
        "MOCK_MAIL_TOKEN",
        "mail-dev-token",
        "Bearer token for /mail",
    ),
    var(
        "MOCK_SLACK_TOKEN",
        "xoxb-dev-token",
        "Bearer bot token for /slack/api",
    ),
    var(
        "MOCK_SLACK_SIGNING_SECRET",
        "slack-dev-signing-secret",
        "signs /_slack/click payloads",
    ),
    var(
        "MOCK_SLACK_INTERACTIVITY_URL",
        "http://127.0.0.1:8080/approvals/slack",
        "where /_slack/click delivers payloads",
    ),
    var(
        "MOCK_OPENAI_KEY",
        "sk-dev-key",
        "Bearer key for /v1/chat/completions",
    ),
    var(
        "MOCK_PUBLIC_URL",
        "http://127.0.0.1:9090",
        "base of Slack response_url links",
    ),
    var("MOCK_FAULT_SEED", "42", "seed of the error_rate fault RNG"),
];

const fn var(name: &'static str, default: &'static str, purpose: &'static str) -> Var {
    Var {
        name,
        default,
        purpose,
    }
}

/// The settings of one mock process.
#[derive(Clone, Debug)]
pub struct Config {
    pub siem_token: String,
    pub ti_key: String,
    pub idp_token: String,
    pub edr_token: String,
    pub grc_token: String,
    pub fw_token: String,
    pub snow_user: String,
    pub snow_password: String,
    pub mail_token: String,
    pub slack_token: String,
    pub slack_signing_secret: String,
    pub slack_interactivity_url: String,
    pub openai_key: String,
    pub public_url: String,
    pub fault_seed: u64,
}

impl Config {
    /// Every value at its dev default.
    pub fn dev() -> Self {
        Self::from_lookup(|_| None).0
    }

    /// Reads the process environment; also returns the names that fell back to a default.
    pub fn from_env() -> (Self, Vec<&'static str>) {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the settings from any lookup, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> (Self, Vec<&'static str>) {
        let mut defaulted = Vec::new();
        let mut get = |name: &str| {
            let var = VARS
                .iter()
                .find(|v| v.name == name)
                .expect("variable is listed in VARS");
            lookup(name).unwrap_or_else(|| {
                defaulted.push(var.name);
                var.default.to_owned()
            })
        };

        let config = Self {
            siem_token: get("MOCK_SIEM_TOKEN"),
            ti_key: get("MOCK_TI_KEY"),
            idp_token: get("MOCK_IDP_TOKEN"),
            edr_token: get("MOCK_EDR_TOKEN"),
            grc_token: get("MOCK_GRC_TOKEN"),
            fw_token: get("MOCK_FW_TOKEN"),
            snow_user: get("MOCK_SNOW_USER"),
            snow_password: get("MOCK_SNOW_PASSWORD"),
            mail_token: get("MOCK_MAIL_TOKEN"),
            slack_token: get("MOCK_SLACK_TOKEN"),
            slack_signing_secret: get("MOCK_SLACK_SIGNING_SECRET"),
            slack_interactivity_url: get("MOCK_SLACK_INTERACTIVITY_URL"),
            openai_key: get("MOCK_OPENAI_KEY"),
            public_url: get("MOCK_PUBLIC_URL").trim_end_matches('/').to_owned(),
            fault_seed: get("MOCK_FAULT_SEED").parse().unwrap_or(42),
        };
        (config, defaulted)
    }
}
