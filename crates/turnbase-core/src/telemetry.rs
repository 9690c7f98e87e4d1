//! Logs, traces and metrics for a Turnbase process.
//!
//! Logs go to stderr through `tracing` (human-readable on a terminal, JSON
//! otherwise). Every tracing span is also an OpenTelemetry span, so trace ids
//! exist even when no trace exporter is configured; that is what lets every
//! log line inside a request carry its trace and span ids. Metrics are
//! OpenTelemetry instruments read by an optional periodic exporter and, when a
//! metrics listener is configured, by a Prometheus registry.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    None,
    Stdout,
    Otlp,
}

pub const LOG_FORMATS: &[(&str, LogFormat)] = &[
    ("auto", LogFormat::Auto),
    ("text", LogFormat::Text),
    ("json", LogFormat::Json),
];

pub const EXPORTERS: &[(&str, Exporter)] = &[
    ("none", Exporter::None),
    ("stdout", Exporter::Stdout),
    ("otlp", Exporter::Otlp),
];

pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    crate::config::parse_choice(text, LOG_FORMATS)
}

pub fn parse_exporter(text: &str) -> Result<Exporter, String> {
    crate::config::parse_choice(text, EXPORTERS)
}

/// A log filter such as `info` or `info,turnbase_store=debug`.
pub fn parse_log_level(text: &str) -> Result<String, String> {
    EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_string())
        .map_err(|e| {
            format!("{text:?} is not a log filter ({e}); expected e.g. info or info,sqlx=warn")
        })
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub service_name: &'static str,
    pub log_format: LogFormat,
    pub log_level: String,
    pub traces: Exporter,
    pub metrics: Exporter,
    /// Base URL of an OTLP/HTTP collector; `/v1/traces` and `/v1/metrics`
    /// are appended.
    pub otlp_endpoint: String,
    pub metrics_interval: Duration,
    /// Whether to keep a Prometheus registry for a metrics listener.
    pub prometheus: bool,
}

/// The telemetry runtime. Dropping it does not flush; call [`Telemetry::shutdown`].
#[derive(Clone)]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    registry: Option<prometheus::Registry>,
    meter: Meter,
}

impl Telemetry {
    /// Builds the providers and installs the global log subscriber. Installing
    /// the subscriber a second time in one process (as tests that start many
    /// apps do) keeps the first one and is not an error.
    pub fn init(config: &TelemetryConfig) -> anyhow::Result<Self> {
        let resource = Resource::builder()
            .with_service_name(config.service_name)
            .build();

        let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
        match config.traces {
            Exporter::None => {}
            Exporter::Stdout => {
                tracer_builder = tracer_builder
                    .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
            }
            Exporter::Otlp => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(join_url(&config.otlp_endpoint, "/v1/traces"))
                    .build()?;
                tracer_builder = tracer_builder.with_batch_exporter(exporter);
            }
        }
        let tracer_provider = tracer_builder.build();

        let mut meter_builder = SdkMeterProvider::builder().with_resource(resource);
        match config.metrics {
            Exporter::None => {}
            Exporter::Stdout => {
                let reader =
                    PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default())
                        .with_interval(config.metrics_interval)
                        .build();
                meter_builder = meter_builder.with_reader(reader);
            }
            Exporter::Otlp => {
                let exporter = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_endpoint(join_url(&config.otlp_endpoint, "/v1/metrics"))
                    .build()?;
                let reader = PeriodicReader::builder(exporter)
                    .with_interval(config.metrics_interval)
                    .build();
                meter_builder = meter_builder.with_reader(reader);
            }
        }
        let registry = if config.prometheus {
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .scope_info_enabled(false)
                .without_target_info()
                .build()?;
            meter_builder = meter_builder.with_reader(exporter);
            Some(registry)
        } else {
            None
        };
        let has_reader = config.metrics != Exporter::None || registry.is_some();
        let meter_provider = meter_builder.build();
        // Without a reader nothing would read the instruments, and the SDK
        // logs an error for every observable gauge; a no-op meter records
        // nothing, quietly.
        let meter = if has_reader {
            meter_provider.meter("turnbase")
        } else {
            opentelemetry::metrics::noop::NoopMeterProvider::new().meter("turnbase")
        };

        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        install_subscriber(config, &tracer_provider);

        Ok(Self {
            tracer_provider,
            meter_provider,
            registry,
            meter,
        })
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The Prometheus text exposition of every metric, when a registry is kept.
    pub fn prometheus_text(&self) -> Option<String> {
        let registry = self.registry.as_ref()?;
        let mut out = String::new();
        if let Err(err) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out) {
            tracing::warn!(%err, "cannot encode metrics");
        }
        Some(out)
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        let traces = self.tracer_provider.shutdown();
        let metrics = self.meter_provider.shutdown();
        traces.map_err(|e| anyhow::anyhow!("traces: {e}"))?;
        metrics.map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
        Ok(())
    }
}

fn join_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn install_subscriber(config: &TelemetryConfig, tracer_provider: &SdkTracerProvider) {
    let filter = EnvFilter::builder().parse_lossy(&config.log_level);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer(config.service_name))
        .with_tracked_inactivity(false)
        .with_threads(false);
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_span_list(true)
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    // A second install in the same process keeps the first subscriber.
    let _ = result;
}

/// A meter that records nothing, for components built without telemetry
/// (tests, tools).
pub fn noop_meter() -> opentelemetry::metrics::Meter {
    use opentelemetry::metrics::MeterProvider as _;
    opentelemetry::metrics::noop::NoopMeterProvider::new().meter("turnbase-noop")
}
