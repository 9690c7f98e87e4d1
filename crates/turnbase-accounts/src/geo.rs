//! Where sign-ins come from: the client's address behind trusted proxies,
//! its country from a MaxMind-format database, and per-country daily
//! sign-in counts kept in memory until the next flush.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use turnbase_store::accounts::LoginCount;

/// The country code counted when the country is unknown (ISO 3166's
/// user-assigned "unknown or unspecified").
pub const UNKNOWN_COUNTRY: &str = "ZZ";

/// Country lookups; without a database every address is unknown.
pub struct GeoIp {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

impl GeoIp {
    pub fn none() -> GeoIp {
        GeoIp { reader: None }
    }

    /// Opens the database at `path`, checking that it can be read.
    pub fn open(path: &Path) -> Result<GeoIp, String> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| format!("cannot open the GeoIP database {}: {e}", path.display()))?;
        Ok(GeoIp {
            reader: Some(reader),
        })
    }

    /// The ISO country code of `ip`, or `None` when it is not known. A
    /// lookup error (a corrupt record) is logged and treated as unknown.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let reader = self.reader.as_ref()?;
        let ip = canonical(ip);
        let found = reader
            .lookup(ip)
            .and_then(|r| r.decode::<maxminddb::geoip2::Country<'_>>());
        match found {
            Ok(Some(record)) => record
                .country
                .iso_code
                .or(record.registered_country.iso_code)
                .map(str::to_string),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(%ip, error = %err, "GeoIP lookup failed; country unknown");
                None
            }
        }
    }
}

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Parses `10.0.0.0/8, 127.0.0.1, ::1`.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or CIDR network"))?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer itself, unless the peer is a
    /// trusted proxy; then the nearest address in `X-Forwarded-For` that
    /// is not a trusted proxy (read from the right, since only the
    /// entries our own proxies appended can be believed).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = forwarded_for
            .iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>().map(canonical) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Sign-ins per (UTC day, country), waiting to be written.
#[derive(Default)]
pub struct LoginCounter {
    pending: Mutex<HashMap<(String, String), i64>>,
}

impl LoginCounter {
    pub fn record(&self, at: DateTime<Utc>, country: Option<&str>) {
        let key = (
            at.format("%Y-%m-%d").to_string(),
            country.unwrap_or(UNKNOWN_COUNTRY).to_string(),
        );
        *self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Takes everything counted so far.
    pub fn take(&self) -> Vec<LoginCount> {
        let drained = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        drained
            .into_iter()
            .map(|((day, country), logins)| LoginCount {
                day,
                country,
                logins,
            })
            .collect()
    }

    /// Puts counts back after a failed write, so nothing is lost.
    pub fn restore(&self, counts: Vec<LoginCount>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for c in counts {
            *pending.entry((c.day, c.country)).or_default() += c.logins;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/geo")
            .join(name)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn countries_from_the_fixture() {
        for file in ["GeoLite2-Country-Test.mmdb", "GeoLite2-City-Test.mmdb"] {
            let geo = GeoIp::open(&fixture(file)).expect("the fixture opens");
            let cases = [
                ("2.125.160.216", Some("GB")),
                ("81.2.69.160", Some("GB")),
                ("89.160.20.112", Some("SE")),
                ("216.160.83.56", Some("US")),
                ("2001:218::", Some("JP")),
                ("::ffff:81.2.69.160", Some("GB")),
                ("127.0.0.1", None),
                ("10.0.0.1", None),
            ];
            for (addr, want) in cases {
                assert_eq!(geo.country(ip(addr)).as_deref(), want, "{file}: {addr}");
            }
        }
        assert_eq!(GeoIp::none().country(ip("81.2.69.160")), None);
        let err = GeoIp::open(Path::new("/nonexistent.mmdb"))
            .err()
            .expect("missing file");
        assert!(err.contains("/nonexistent.mmdb"), "{err}");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").expect("valid");
        let none = TrustedProxies::default();
        let cases: &[(&TrustedProxies, &str, &[&str], &str)] = &[
            (&none, "127.0.0.1", &["81.2.69.160"], "127.0.0.1"),
            (&trusted, "192.0.2.1", &["81.2.69.160"], "192.0.2.1"),
            (&trusted, "127.0.0.1", &["81.2.69.160"], "81.2.69.160"),
            (&trusted, "127.0.0.1", &[], "127.0.0.1"),
            // A client cannot spoof by sending its own header first.
            (
                &trusted,
                "127.0.0.1",
                &["6.6.6.6, 81.2.69.160, 10.1.2.3"],
                "81.2.69.160",
            ),
            (
                &trusted,
                "127.0.0.1",
                &["6.6.6.6", "81.2.69.160"],
                "81.2.69.160",
            ),
            (&trusted, "127.0.0.1", &["garbage, 10.0.0.2"], "10.0.0.2"),
            (
                &trusted,
                "::ffff:127.0.0.1",
                &["89.160.20.112"],
                "89.160.20.112",
            ),
        ];
        for (proxies, peer, xff, want) in cases {
            assert_eq!(proxies.client_ip(ip(peer), xff), ip(want), "{peer} {xff:?}");
        }
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
    }

    #[test]
    fn counts_are_taken_and_restored() {
        let counter = LoginCounter::default();
        let day = |d: u32| {
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, d, 23, 59, 0)
                .single()
                .expect("valid")
        };
        counter.record(day(24), Some("SE"));
        counter.record(day(24), Some("SE"));
        counter.record(day(25), None);
        let mut taken = counter.take();
        taken.sort_by(|a, b| a.day.cmp(&b.day));
        assert_eq!(taken.len(), 2);
        assert_eq!(
            (
                taken[0].day.as_str(),
                taken[0].country.as_str(),
                taken[0].logins
            ),
            ("2026-11-24", "SE", 2)
        );
        assert_eq!(taken[1].country, UNKNOWN_COUNTRY);
        assert!(counter.take().is_empty());
        counter.restore(taken);
        counter.record(day(24), Some("SE"));
        let again = counter.take();
        assert_eq!(again.iter().map(|c| c.logins).sum::<i64>(), 4);
    }
}
