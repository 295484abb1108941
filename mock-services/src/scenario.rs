//! The fixed scenario every service answers from: users, hosts, indicators and emails.
//!
//! The numbers are chosen so that the incident-response playbook's additive risk score gives
//! each user a known severity; mock-services/README.md carries the table and the breakdown.

use serde::Serialize;

/// The time of the demo IDS alert; every scenario event happens in the hour before it.
pub const ALERT_TIME: &str = "2024-01-15T14:30:00Z";

/// The dropper EDR finds on srv-build-03 and ws-mallory-02.
pub const MALWARE_SHA256: &str = "07f4acde8fa96c1216af0327d79b32cd22e31bf702b32232e24341fbc750329f";
/// A second tool on srv-build-03.
pub const SSH_INJECTOR_SHA256: &str =
    "3074919e12a27bfb5fd19b28e530d9859a64e3af56ced2861cfa76ee8f9856d8";
/// The macro workbook attached to the phishing email.
pub const PHISH_ATTACHMENT_SHA256: &str =
    "3784ee503c1e16a0a1417032bc9a853403277bde5c6f5b51f0f04f151d47015a";
/// The harmless PDF attached to the benign email.
pub const BENIGN_ATTACHMENT_SHA256: &str =
    "cf6a7ec03b98c4ce7ead6fabef73edbcb01719482971ffd084e8e57dc069db48";
/// The look-alike domain the phishing email comes from and links to.
pub const PHISH_DOMAIN: &str = "login-micros0ft.example";

/// A directory user and everything the other services know about them.
#[derive(Debug, Serialize)]
pub struct User {
    pub username: &'static str,
    pub display_name: &'static str,
    pub email: &'static str,
    pub department: &'static str,
    pub role: &'static str,
    pub manager: Option<&'static str>,
    pub devices: &'static [&'static str],
    pub privileged: bool,
    /// The source IP of the user's scenario alert and of their failed logins.
    #[serde(skip)]
    pub alert_ip: &'static str,
    #[serde(skip)]
    pub failed_logins: u32,
    #[serde(skip)]
    pub compliance: Compliance,
}

/// What the GRC tool knows about a user.
#[derive(Debug, Serialize)]
pub struct Compliance {
    pub permissions_ok: bool,
    pub risks: &'static [&'static str],
    pub recent_changes: &'static [Change],
    pub access_requests: &'static [AccessRequest],
}

#[derive(Debug, Serialize)]
pub struct Change {
    pub time: &'static str,
    pub action: &'static str,
    pub target: &'static str,
    pub by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AccessRequest {
    pub id: &'static str,
    pub resource: &'static str,
    pub status: &'static str,
    pub requested_at: &'static str,
}

/// A reputation entry in the threat-intel feed.
#[derive(Debug, Serialize)]
pub struct Reputation {
    pub indicator: &'static str,
    pub score: u8,
    pub malicious: bool,
    pub indicators: &'static [&'static str],
    pub last_seen: &'static str,
}

/// An endpoint the EDR manages.
#[derive(Debug, Serialize)]
pub struct Host {
    pub hostname: &'static str,
    pub os: &'static str,
    pub owner: &'static str,
    pub threats: &'static [Threat],
}

#[derive(Debug, Serialize)]
pub struct Threat {
    pub name: &'static str,
    pub severity: &'static str,
    pub path: &'static str,
    pub sha256: &'static str,
}

/// A reported email as the mail gateway stores it.
#[derive(Debug, Serialize)]
pub struct Email {
    pub id: &'static str,
    pub from: &'static str,
    pub to: &'static [&'static str],
    pub subject: &'static str,
    pub received_at: &'static str,
    pub reported_by: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    pub urls: &'static [&'static str],
    pub attachments: &'static [Attachment],
    pub body: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Attachment {
    pub name: &'static str,
    pub sha256: &'static str,
    pub content_type: &'static str,
    pub size: u32,
}

const NO_CHANGES: &[Change] = &[];
const NO_REQUESTS: &[AccessRequest] = &[];

pub const USERS: &[User] = &[
    User {
        username: "alice",
        display_name: "Alice Martin",
        email: "alice@corp.example",
        department: "marketing",
        role: "Marketing Specialist",
        manager: Some("carol"),
        devices: &["laptop-alice-01"],
        privileged: false,
        alert_ip: "10.20.0.15",
        failed_logins: 1,
        compliance: Compliance {
            permissions_ok: true,
            risks: &[],
            recent_changes: &[
                change(
                    "2024-01-15T09:12:00Z",
                    "view_report",
                    "campaign-dashboard",
                    "alice",
                ),
                change("2024-01-12T16:40:00Z", "reset_password", "alice", "alice"),
            ],
            access_requests: NO_REQUESTS,
        },
    },
    User {
        username: "bob",
        display_name: "Bob Okafor",
        email: "bob@corp.example",
        department: "engineering",
        role: "Software Engineer",
        manager: Some("dave"),
        devices: &["ws-bob-07"],
        privileged: false,
        alert_ip: "203.0.113.50",
        failed_logins: 6,
        compliance: Compliance {
            permissions_ok: true,
            risks: &["stale-access-review"],
            recent_changes: &[change(
                "2024-01-14T11:05:00Z",
                "view_report",
                "ci-pipeline-stats",
                "bob",
            )],
            access_requests: &[AccessRequest {
                id: "REQ-2041",
                resource: "prod-db-readonly",
                status: "approved",
                requested_at: "2023-06-02T10:00:00Z",
            }],
        },
    },
    User {
        username: "jdoe",
        display_name: "John Doe",
        email: "jdoe@corp.example",
        department: "finance",
        role: "Senior Accountant",
        manager: Some("carol"),
        devices: &["workstation-015", "laptop-jdoe-02"],
        privileged: true,
        alert_ip: "192.168.1.100",
        failed_logins: 7,
        compliance: Compliance {
            permissions_ok: true,
            risks: &[],
            recent_changes: &[
                change(
                    "2024-01-15T08:55:00Z",
                    "view_report",
                    "quarterly-ledger",
                    "jdoe",
                ),
                change("2024-01-11T13:20:00Z", "reset_password", "jdoe", "helpdesk"),
            ],
            access_requests: NO_REQUESTS,
        },
    },
    User {
        username: "mallory",
        display_name: "Mallory Stone",
        email: "mallory@corp.example",
        department: "admin",
        role: "Systems Administrator",
        manager: Some("dave"),
        devices: &["srv-build-03", "laptop-mallory-01", "ws-mallory-02"],
        privileged: true,
        alert_ip: "198.51.100.23",
        failed_logins: 12,
        compliance: Compliance {
            permissions_ok: false,
            risks: &["excessive-privileges", "sod-conflict:deploy+approve"],
            recent_changes: &[
                change(
                    "2024-01-15T13:40:00Z",
                    "enable_ssh",
                    "srv-build-03",
                    "mallory",
                ),
                change("2024-01-15T13:45:00Z", "add_user", "svc-backup2", "mallory"),
                change(
                    "2024-01-15T13:50:00Z",
                    "request_access",
                    "prod-payments-db",
                    "mallory",
                ),
            ],
            access_requests: &[AccessRequest {
                id: "REQ-3107",
                resource: "prod-payments-db",
                status: "pending",
                requested_at: "2024-01-15T13:50:00Z",
            }],
        },
    },
    User {
        username: "carol",
        display_name: "Carol Diaz",
        email: "carol@corp.example",
        department: "security",
        role: "SOC Lead",
        manager: None,
        devices: &["laptop-carol-01"],
        privileged: true,
        alert_ip: "10.20.0.40",
        failed_logins: 0,
        compliance: Compliance {
            permissions_ok: true,
            risks: &[],
            recent_changes: NO_CHANGES,
            access_requests: NO_REQUESTS,
        },
    },
    User {
        username: "dave",
        display_name: "Dave Lindqvist",
        email: "dave@corp.example",
        department: "engineering",
        role: "Engineering Manager",
        manager: None,
        devices: &["ws-dave-01"],
        privileged: false,
        alert_ip: "10.20.0.41",
        failed_logins: 0,
        compliance: Compliance {
            permissions_ok: true,
            risks: &[],
            recent_changes: &[change(
                "2024-01-13T10:00:00Z",
                "view_report",
                "team-okrs",
                "dave",
            )],
            access_requests: NO_REQUESTS,
        },
    },
];

const fn change(
    time: &'static str,
    action: &'static str,
    target: &'static str,
    by: &'static str,
) -> Change {
    Change {
        time,
        action,
        target,
        by,
    }
}

pub const IPS: &[Reputation] = &[
    reputation("10.20.0.15", 5, false, &["internal"]),
    reputation(
        "203.0.113.50",
        55,
        false,
        &["vpn-exit", "password-spray-source"],
    ),
    reputation(
        "192.168.1.100",
        85,
        true,
        &["brute-force", "credential-stuffing"],
    ),
    reputation(
        "198.51.100.23",
        95,
        true,
        &["c2", "tor-exit", "brute-force"],
    ),
];

pub const DOMAINS: &[Reputation] = &[
    reputation(
        PHISH_DOMAIN,
        92,
        true,
        &["phishing", "typosquat", "credential-harvesting"],
    ),
    reputation(
        "update-svc.example",
        88,
        true,
        &["malware-distribution", "c2"],
    ),
];

pub const HASHES: &[Reputation] = &[
    reputation(MALWARE_SHA256, 98, true, &["trojan", "dropper"]),
    reputation(SSH_INJECTOR_SHA256, 80, true, &["hacktool", "persistence"]),
    reputation(
        PHISH_ATTACHMENT_SHA256,
        90,
        true,
        &["macro", "downloader", "phishing"],
    ),
];

const fn reputation(
    indicator: &'static str,
    score: u8,
    malicious: bool,
    indicators: &'static [&'static str],
) -> Reputation {
    Reputation {
        indicator,
        score,
        malicious,
        indicators,
        last_seen: "2024-01-15T14:00:00Z",
    }
}

const DROPPER: &str = "Trojan.Dropper.SvcUpdater";

pub const HOSTS: &[Host] = &[
    host("laptop-alice-01", "macOS 14.2", "alice", &[]),
    host("ws-bob-07", "Windows 11 23H2", "bob", &[]),
    host("workstation-015", "Windows 11 23H2", "jdoe", &[]),
    host("laptop-jdoe-02", "macOS 14.2", "jdoe", &[]),
    host(
        "srv-build-03",
        "Ubuntu 22.04 LTS",
        "mallory",
        &[
            Threat {
                name: DROPPER,
                severity: "critical",
                path: "/tmp/.cache/svc-updater",
                sha256: MALWARE_SHA256,
            },
            Threat {
                name: "HackTool.Linux.SSHKeyInjector",
                severity: "high",
                path: "/usr/local/bin/sshd-helper",
                sha256: SSH_INJECTOR_SHA256,
            },
        ],
    ),
    host("laptop-mallory-01", "Windows 11 23H2", "mallory", &[]),
    host(
        "ws-mallory-02",
        "Windows 11 23H2",
        "mallory",
        &[Threat {
            name: DROPPER,
            severity: "critical",
            path: "C:\\Users\\mallory\\AppData\\Local\\Temp\\svc-updater.exe",
            sha256: MALWARE_SHA256,
        }],
    ),
    host("laptop-carol-01", "macOS 14.2", "carol", &[]),
    host("ws-dave-01", "Windows 11 23H2", "dave", &[]),
];

const fn host(
    hostname: &'static str,
    os: &'static str,
    owner: &'static str,
    threats: &'static [Threat],
) -> Host {
    Host {
        hostname,
        os,
        owner,
        threats,
    }
}

pub const EMAILS: &[Email] = &[
    Email {
        id: "msg-phish-001",
        from: "IT Service Desk <it-support@login-micros0ft.example>",
        to: &[
            "jdoe@corp.example",
            "alice@corp.example",
            "bob@corp.example",
        ],
        subject: "Action required: your mailbox password expires today",
        received_at: "2024-01-15T13:52:11Z",
        reported_by: "jdoe@corp.example",
        headers: &[
            ("Return-Path", "<bounce@login-micros0ft.example>"),
            ("Reply-To", "it-support@login-micros0ft.example"),
            (
                "Received-SPF",
                "fail (domain of login-micros0ft.example does not designate 198.51.100.23)",
            ),
            (
                "Authentication-Results",
                "mx.corp.example; spf=fail; dkim=none; dmarc=fail",
            ),
            (
                "Message-ID",
                "<20240115135211.4471@login-micros0ft.example>",
            ),
            ("X-Originating-IP", "198.51.100.23"),
        ],
        urls: &["https://login-micros0ft.example/owa/auth/logon.aspx?user=jdoe"],
        attachments: &[Attachment {
            name: "Invoice_2024-0115.xlsm",
            sha256: PHISH_ATTACHMENT_SHA256,
            content_type: "application/vnd.ms-excel.sheet.macroEnabled.12",
            size: 48_213,
        }],
        body: "Your mailbox password expires today. Keep your current password by signing in \
               at https://login-micros0ft.example/owa/auth/logon.aspx?user=jdoe within 24 \
               hours. The attached invoice lists the pending charges.",
    },
    Email {
        id: "msg-benign-002",
        from: "Carol Diaz <carol@corp.example>",
        to: &["alice@corp.example"],
        subject: "Q1 campaign review",
        received_at: "2024-01-15T10:03:40Z",
        reported_by: "alice@corp.example",
        headers: &[
            ("Return-Path", "<carol@corp.example>"),
            (
                "Authentication-Results",
                "mx.corp.example; spf=pass; dkim=pass; dmarc=pass",
            ),
            ("Message-ID", "<20240115100340.118@corp.example>"),
        ],
        urls: &["https://intranet.corp.example/marketing/q1-review"],
        attachments: &[Attachment {
            name: "q1-review.pdf",
            sha256: BENIGN_ATTACHMENT_SHA256,
            content_type: "application/pdf",
            size: 182_044,
        }],
        body: "Hi Alice, the Q1 review is attached and on the intranet page. Comments by Friday?",
    },
    Email {
        id: "msg-phish-003",
        from: "IT Service Desk <it-support@login-micros0ft.example>",
        to: &["mallory@corp.example"],
        subject: "RE: Action required: your mailbox password expires today",
        received_at: "2024-01-15T14:05:37Z",
        reported_by: "mallory@corp.example",
        headers: &[
            ("Return-Path", "<bounce@login-micros0ft.example>"),
            (
                "Authentication-Results",
                "mx.corp.example; spf=fail; dkim=none; dmarc=fail",
            ),
            (
                "Message-ID",
                "<20240115140537.4502@login-micros0ft.example>",
            ),
        ],
        urls: &["https://login-micros0ft.example/owa/auth/logon.aspx?user=mallory"],
        attachments: &[],
        body: "Reminder: sign in at \
               https://login-micros0ft.example/owa/auth/logon.aspx?user=mallory \
               to keep your mailbox.",
    },
];

pub fn user(username: &str) -> Option<&'static User> {
    USERS
        .iter()
        .find(|u| u.username.eq_ignore_ascii_case(username))
}

pub fn host_named(hostname: &str) -> Option<&'static Host> {
    HOSTS
        .iter()
        .find(|h| h.hostname.eq_ignore_ascii_case(hostname))
}

pub fn email(id: &str) -> Option<&'static Email> {
    EMAILS.iter().find(|e| e.id == id)
}

/// The bare address of a `Name <address>` sender.
pub fn address_of(from: &str) -> &str {
    from.rsplit_once('<')
        .map_or(from, |(_, rest)| rest.trim_end_matches('>'))
        .trim()
}
