import {
  Counter,
  type CounterConfiguration,
  Gauge,
  type GaugeConfiguration,
  Histogram,
  type HistogramConfiguration,
  type Registry,
} from 'prom-client';

/**
 * The one way silo makes a metric (docs/architecture.md, "Metrics"): on the
 * registry the component was given, get-or-create by name. Several parts
 * share one agent's registry (three document views, a log reopened after a
 * simulated restart, a second runtime in a test) and prom-client refuses a
 * name registered twice; here the second caller gets the first's metric. A
 * name registered with another type is a bug and throws.
 */

export function counterIn<T extends string>(
  registry: Registry,
  config: Omit<CounterConfiguration<T>, 'registers'>,
): Counter<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing !== undefined) return sameType(existing, Counter, config.name) as Counter<T>;
  return new Counter<T>({ ...config, registers: [registry] });
}

/**
 * A gauge; one with `collect` is computed at scrape time by the first
 * component that made it (a second one on the same registry reads through
 * the first's).
 */
export function gaugeIn<T extends string>(
  registry: Registry,
  config: Omit<GaugeConfiguration<T>, 'registers'>,
): Gauge<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing !== undefined) return sameType(existing, Gauge, config.name) as Gauge<T>;
  return new Gauge<T>({ ...config, registers: [registry] });
}

export function histogramIn<T extends string>(
  registry: Registry,
  config: Omit<HistogramConfiguration<T>, 'registers'>,
): Histogram<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing !== undefined) return sameType(existing, Histogram, config.name) as Histogram<T>;
  return new Histogram<T>({ ...config, registers: [registry] });
}

function sameType<M>(metric: unknown, type: abstract new (...args: never[]) => M, name: string): M {
  if (!(metric instanceof type)) throw new Error(`metric ${name} already registered with another type`);
  return metric;
}
