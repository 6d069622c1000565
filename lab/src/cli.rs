//! Command line. Parsed by hand: the binary runs in a minimal initramfs and
//! two subcommands do not justify an argument-parsing dependency.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{lab_err, Result};
use crate::lab::Expect;
use crate::scenarios::{self, Options};
use crate::toa_option::{self, Toa};
use crate::{bench, chaos, stress};

const USAGE: &str = "\
usage:
  toa-lab scenarios --expect module --module PATH [--module-param NAME=VALUE]...
                    [--step-timeout SECS] [--only NAME,...] [--trace]
                    [--fuzz-connections N] [--fuzz-seed S]
  toa-lab scenarios --expect kernel [--step-timeout SECS] [--only NAME,...] [--trace]
                    [--fuzz-connections N] [--fuzz-seed S]
  toa-lab scenarios --expect bpf [--toa PATH] [--step-timeout SECS] [--only NAME,...]
  toa-lab stress --module PATH [--cycles N] [--held N] [--threads N] [--storm N] [--churn N]
                 [--step-timeout SECS]
  toa-lab bench --module PATH [--rounds N] [--window SECS] [--toa PATH]
  toa-lab chaos --module PATH [--module-param NAME=VALUE]... [--seconds N]
                [--max-steps N] [--seed S] [--tls PATH] [--step-timeout SECS]
  toa-lab craft --kind N --client IP:PORT
  toa-lab request --port N [--to IP] [--client IP:PORT] [--kind N] [--path /PATH]
                  [--step-timeout SECS]
  toa-lab serve --port N [--connections N]

scenarios   create TUN device toa0 (10.0.0.1/24, fd00::1/64), act as L4 proxy
            (10.0.0.2, fd00::2) and origin (ports 8080 AF_INET, 8081 AF_INET6),
            print TOA-LAB RESULT/STATS/DONE lines; needs root.
  --expect module   toa.ko is loaded: TOA connections must show the client
  --expect kernel   no module: every connection must show the proxy
  --expect bpf      the eBPF mode is attached (no module): as module, but an
                    IPv6 client on an AF_INET listener shows the proxy; then
                    the eBPF-only scenarios (settings reloads, unload)
  --toa PATH        the operator's toa command, whose `toa bpf load|unload`
                    the eBPF-only scenarios run (default /bin/toa)
  --module PATH     toa.ko to insmod again in the reload scenario
  --module-param P  NAME=VALUE passed to that insmod (repeatable)
  --step-timeout S  seconds to wait for each protocol step (default 3)
  --only A,B        run only these scenarios (repeatable); ktls, which
                    leaves toa.ko loaded until reboot, runs only when named
  --trace           log every TCP segment on toa0 to stderr
  --fuzz-connections N  connections of the malformed-options scenario (default 200)
  --fuzz-seed S     seed of its option generator (default: a fresh one, printed)
stress      with toa.ko loaded: rmmod/insmod cycles (default 50) while TOA
            connections are made and --threads (4) threads call getpeername
            on --held (16) open ones and --storm (256) threads on one more;
            then --churn (100000) short TOA
            connections, after which every record must be freed
bench       the module's cost: loopback accept rate, getpeername rate on a
            TOA and a plain connection, TOA connection rate, each with the
            module unloaded and loaded, --rounds (5) times for --window (2) s;
            then allocations per IPv4 TOA connection; with --toa,
            the eBPF mode is measured as a third state (module=bpf)
chaos       random syscall sequences (listen, connect and AF_UNSPEC,
            accept, shutdown, close, setsockopt TCP_ULP/IPV6_V6ONLY/
            IPV6_ADDRFORM/SO_REUSEPORT, getpeername, fork-and-close) on TOA
            and plain sockets, with rmmod/insmod between, for --seconds (30)
            or --max-steps; the kernel log must stay clean; prints the seed,
            and --seed S replays the same sequence; --tls PATH (tls.ko)
            enables the TCP_ULP steps, which pin the module
craft       print the bytes of a TOA option (hex)
request     one HTTP/1.0 GET for --path (/) to port --port of this host, as an L4
            proxy sends it: TUN device toar0 (10.77.0.1/24), proxy 10.77.0.2,
            TOA kind --kind (254) naming --client on the handshake ACK (none
            without --client); prints the status line, exit 0 on any HTTP
            answer; needs root; the device is gone when it ends; --to sends it
            to that address instead (routed by this host: a server behind a veth)
serve       an HTTP/1.0 origin on port --port (AF_INET, every address): for each
            connection prints `TOA-LAB SERVE accept=IP:PORT getpeername=IP:PORT`,
            the peer as accept() and getpeername() give it, and answers 200;
            ends after --connections connections (default: never)
";

/// Where the lab guest keeps the operator's toa command (`toa bpf load`).
const DEFAULT_TOA: &str = "/bin/toa";

/// Exit status for a command line we cannot act on.
const EXIT_USAGE: i32 = 2;

pub fn main(args: &[String]) -> i32 {
    let outcome = match args.first().map(String::as_str) {
        Some("scenarios") => parse_scenarios(&args[1..]).map(scenarios::run),
        Some("stress") => parse_stress(&args[1..]).map(stress::run),
        Some("chaos") => parse_chaos(&args[1..]).map(chaos::run),
        Some("bench") => parse_bench(&args[1..]).map(bench::run),
        Some("craft") => craft(&args[1..]).map(|()| 0),
        Some("request") => crate::request::parse(&args[1..]).map(crate::request::run),
        Some("serve") => crate::serve::parse(&args[1..]).map(crate::serve::run),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return 0;
        }
        _ => Err(lab_err!("missing or unknown command")),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("toa-lab: {e}\n\n{USAGE}");
        EXIT_USAGE
    })
}

/// Flags that stand alone; every other flag takes a value.
const SWITCHES: &[&str] = &["--trace"];

/// Splits the arguments into `(--flag, value)` pairs; a switch gets "".
fn flag_pairs(args: &[String]) -> Result<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            return Err(lab_err!("unexpected argument {flag:?}"));
        }
        if SWITCHES.contains(&flag.as_str()) {
            pairs.push((flag.as_str(), ""));
            continue;
        }
        let value = it.next().ok_or_else(|| lab_err!("{flag} needs a value"))?;
        pairs.push((flag.as_str(), value.as_str()));
    }
    Ok(pairs)
}

fn parse_scenarios(args: &[String]) -> Result<Options> {
    let mut expect = None;
    let mut module = None;
    let mut step_timeout = Duration::from_secs(3);
    let mut only = None;
    let mut trace = false;
    let mut module_params = Vec::new();
    let mut fuzz_connections = scenarios::DEFAULT_FUZZ_CONNECTIONS;
    let mut fuzz_seed = None;
    let mut loader = PathBuf::from(DEFAULT_TOA);
    for (flag, value) in flag_pairs(args)? {
        match flag {
            "--trace" => trace = true,
            "--fuzz-connections" => {
                fuzz_connections = value
                    .parse()
                    .map_err(|_| lab_err!("--fuzz-connections wants a count, not {value:?}"))?
            }
            "--fuzz-seed" => {
                fuzz_seed = Some(
                    value
                        .parse()
                        .map_err(|_| lab_err!("--fuzz-seed wants a number, not {value:?}"))?,
                )
            }
            "--expect" => {
                expect = Some(match value {
                    "module" => Expect::Module,
                    "kernel" => Expect::Kernel,
                    "bpf" => Expect::Bpf,
                    other => {
                        return Err(lab_err!(
                            "--expect must be module, kernel or bpf, not {other:?}"
                        ))
                    }
                })
            }
            "--module" => module = Some(PathBuf::from(value)),
            "--toa" => loader = PathBuf::from(value),
            "--module-param" => {
                if !value.contains('=') {
                    return Err(lab_err!("--module-param wants NAME=VALUE, not {value:?}"));
                }
                module_params.push(value.to_string());
            }
            "--step-timeout" => step_timeout = parse_step_timeout(value)?,
            // Repeatable: the guest's kernel command line cannot carry a
            // comma inside one word.
            "--only" => {
                let names: Vec<String> = value.split(',').map(str::to_string).collect();
                let known = scenarios::names();
                if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
                    return Err(lab_err!(
                        "unknown scenario {bad:?}; known: {}",
                        known.join(",")
                    ));
                }
                only.get_or_insert_with(Vec::new).extend(names);
            }
            other => return Err(lab_err!("unknown flag {other}")),
        }
    }
    let expect = expect.ok_or_else(|| lab_err!("--expect module|kernel is required"))?;
    if expect == Expect::Module && module.is_none() {
        return Err(lab_err!(
            "--expect module needs --module PATH (loaded again by the reload scenario)"
        ));
    }
    Ok(Options {
        expect,
        module,
        module_params,
        step_timeout,
        only,
        trace,
        fuzz_connections,
        fuzz_seed,
        loader,
    })
}

fn parse_step_timeout(value: &str) -> Result<Duration> {
    value
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| lab_err!("--step-timeout wants positive seconds, not {value:?}"))
}

fn parse_count<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| lab_err!("{flag} wants a count, not {value:?}"))
}

fn parse_chaos(args: &[String]) -> Result<chaos::Options> {
    let mut opts = chaos::Options {
        seed: None,
        duration: Duration::from_secs(30),
        max_steps: u64::MAX,
        module: PathBuf::new(),
        module_params: Vec::new(),
        tls: None,
        step_timeout: Duration::from_secs(3),
    };
    let mut module = None;
    for (flag, value) in flag_pairs(args)? {
        match flag {
            "--module" => module = Some(PathBuf::from(value)),
            "--module-param" if value.contains('=') => opts.module_params.push(value.to_string()),
            "--seconds" => opts.duration = Duration::from_secs(parse_count::<u64>(flag, value)?),
            "--max-steps" => opts.max_steps = parse_count::<u64>(flag, value)?,
            "--seed" => {
                opts.seed = Some(
                    value
                        .parse()
                        .map_err(|_| lab_err!("--seed wants a number, not {value:?}"))?,
                )
            }
            "--tls" => opts.tls = Some(PathBuf::from(value)),
            "--step-timeout" => {
                opts.step_timeout = Duration::from_secs(parse_count::<u64>(flag, value)?)
            }
            other => return Err(lab_err!("chaos does not take {other} {value}")),
        }
    }
    opts.module =
        module.ok_or_else(|| lab_err!("chaos needs --module PATH (it reloads toa.ko)"))?;
    Ok(opts)
}

fn parse_stress(args: &[String]) -> Result<stress::Options> {
    let mut opts = stress::Options {
        module: PathBuf::new(),
        cycles: 50,
        held: 16,
        threads: 4,
        storm: 256,
        churn: 100_000,
        step_timeout: Duration::from_secs(3),
    };
    let mut module = None;
    for (flag, value) in flag_pairs(args)? {
        match flag {
            "--module" => module = Some(PathBuf::from(value)),
            "--cycles" => opts.cycles = parse_count(flag, value)?,
            "--held" => opts.held = parse_count(flag, value)?,
            "--threads" => opts.threads = parse_count(flag, value)?,
            "--storm" => opts.storm = parse_count(flag, value)?,
            "--churn" => opts.churn = parse_count(flag, value)?,
            "--step-timeout" => opts.step_timeout = parse_step_timeout(value)?,
            other => return Err(lab_err!("unknown flag {other}")),
        }
    }
    opts.module = module.ok_or_else(|| lab_err!("stress needs --module PATH"))?;
    if opts.held == 0 || opts.threads == 0 {
        return Err(lab_err!("--held and --threads must be at least 1"));
    }
    Ok(opts)
}

fn parse_bench(args: &[String]) -> Result<bench::Options> {
    let mut opts = bench::Options {
        module: PathBuf::new(),
        rounds: 5,
        window: Duration::from_secs(2),
        step_timeout: Duration::from_secs(3),
        loader: None,
    };
    let mut module = None;
    for (flag, value) in flag_pairs(args)? {
        match flag {
            "--module" => module = Some(PathBuf::from(value)),
            "--rounds" => opts.rounds = parse_count(flag, value)?,
            "--window" => opts.window = parse_step_timeout(value)?,
            "--toa" => opts.loader = Some(PathBuf::from(value)),
            other => return Err(lab_err!("unknown flag {other}")),
        }
    }
    opts.module = module.ok_or_else(|| lab_err!("bench needs --module PATH"))?;
    if opts.rounds == 0 {
        return Err(lab_err!("--rounds must be at least 1"));
    }
    Ok(opts)
}

fn craft(args: &[String]) -> Result<()> {
    let mut kind = None;
    let mut client = None;
    for (flag, value) in flag_pairs(args)? {
        match flag {
            "--kind" => kind = Some(toa_option::parse_kind(value)?),
            "--client" => {
                client = Some(value.parse().map_err(|_| {
                    lab_err!("--client wants IP:PORT or [IPv6]:PORT, not {value:?}")
                })?)
            }
            other => return Err(lab_err!("unknown flag {other}")),
        }
    }
    let toa = Toa::new(
        kind.ok_or_else(|| lab_err!("--kind is required"))?,
        client.ok_or_else(|| lab_err!("--client is required"))?,
    );
    println!("{}", toa_option::hex(&toa.encode()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn test_parse_module_mode() {
        let o = parse_scenarios(&args("--expect module --module /lib/modules/toa.ko")).unwrap();
        assert_eq!(o.expect, Expect::Module);
        assert_eq!(o.module, Some(PathBuf::from("/lib/modules/toa.ko")));
        assert_eq!(o.step_timeout, Duration::from_secs(3));
        assert!(o.only.is_none());
        assert!(!o.trace);
        assert!(o.module_params.is_empty());
        assert_eq!(o.fuzz_connections, scenarios::DEFAULT_FUZZ_CONNECTIONS);
        assert_eq!(o.fuzz_seed, None);
    }

    #[test]
    fn test_parse_fuzz_flags() {
        let o = parse_scenarios(&args(
            "--expect kernel --fuzz-connections 10000 --fuzz-seed 123",
        ))
        .unwrap();
        assert_eq!(o.fuzz_connections, 10000);
        assert_eq!(o.fuzz_seed, Some(123));
        assert!(parse_scenarios(&args("--expect kernel --fuzz-seed x")).is_err());
        assert!(parse_scenarios(&args("--expect kernel --fuzz-connections -1")).is_err());
    }

    #[test]
    fn test_parse_kernel_mode_with_options() {
        let o = parse_scenarios(&args(
            "--expect kernel --step-timeout 1.5 --only v4-254-8,stats --trace",
        ))
        .unwrap();
        assert!(o.trace);
        assert_eq!(o.expect, Expect::Kernel);
        assert_eq!(o.step_timeout, Duration::from_millis(1500));
        assert_eq!(o.only.unwrap(), ["v4-254-8", "stats"]);
    }

    #[test]
    fn test_repeated_only_adds_up() {
        let o = parse_scenarios(&args(
            "--expect module --module m --only v4-254-8 --only ktls,stats",
        ))
        .unwrap();
        assert_eq!(o.only.unwrap(), ["v4-254-8", "ktls", "stats"]);
    }

    #[test]
    fn test_parse_repeated_module_params() {
        let o = parse_scenarios(&args(
            "--expect module --module /m/toa.ko --module-param a=1 --module-param b=x,y",
        ))
        .unwrap();
        assert_eq!(o.module_params, ["a=1", "b=x,y"]);
        assert!(
            parse_scenarios(&args("--expect module --module m --module-param novalue")).is_err()
        );
    }

    #[test]
    fn test_parse_bpf_mode() {
        let o = parse_scenarios(&args("--expect bpf --only bpf-ports,v4-254-8")).unwrap();
        assert_eq!(o.expect, Expect::Bpf);
        assert_eq!(o.loader, PathBuf::from(DEFAULT_TOA));
        assert_eq!(o.only.unwrap(), ["bpf-ports", "v4-254-8"]);
        let o = parse_scenarios(&args("--expect bpf --toa /x/load")).unwrap();
        assert_eq!(o.loader, PathBuf::from("/x/load"));
    }

    #[test]
    fn test_parse_errors() {
        assert!(parse_scenarios(&args("")).is_err(), "--expect missing");
        assert!(
            parse_scenarios(&args("--expect module")).is_err(),
            "--module missing"
        );
        assert!(parse_scenarios(&args("--expect maybe")).is_err());
        assert!(parse_scenarios(&args("--expect kernel --only nope")).is_err());
        assert!(parse_scenarios(&args("--expect kernel --step-timeout 0")).is_err());
        assert!(parse_scenarios(&args("--expect")).is_err());
        assert!(parse_scenarios(&args("stray")).is_err());
    }

    #[test]
    fn test_usage_errors_exit_2() {
        assert_eq!(main(&args("bogus")), EXIT_USAGE);
        assert_eq!(main(&args("craft --kind 254")), EXIT_USAGE);
    }

    #[test]
    fn test_parse_stress() {
        let o = parse_stress(&args("--module /m/toa.ko --cycles 60 --churn 10")).unwrap();
        assert_eq!(
            (o.cycles, o.held, o.threads, o.storm, o.churn),
            (60, 16, 4, 256, 10)
        );
        assert_eq!(o.module, PathBuf::from("/m/toa.ko"));
        assert!(
            parse_stress(&args("--cycles 5")).is_err(),
            "module is required"
        );
        assert!(parse_stress(&args("--module m --threads 0")).is_err());
        assert!(parse_stress(&args("--module m --churn many")).is_err());
    }
}
