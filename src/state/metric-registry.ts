import {
  Counter,
  type CounterConfiguration,
  Histogram,
  type HistogramConfiguration,
  type Registry,
} from 'prom-client';

/**
 * Get-or-create helpers for metrics on a caller-supplied registry.
 *
 * Several state components (three views, a reopened log after a simulated
 * restart) share one agent's registry and would otherwise collide on
 * registering the same metric name twice, which prom-client rejects.
 */

export function counterIn<T extends string>(
  registry: Registry,
  config: Omit<CounterConfiguration<T>, 'registers'>,
): Counter<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing) {
    if (!(existing instanceof Counter))
      throw new Error(`metric ${config.name} already registered with another type`);
    return existing as Counter<T>;
  }
  return new Counter<T>({ ...config, registers: [registry] });
}

export function histogramIn<T extends string>(
  registry: Registry,
  config: Omit<HistogramConfiguration<T>, 'registers'>,
): Histogram<T> {
  const existing = registry.getSingleMetric(config.name);
  if (existing) {
    if (!(existing instanceof Histogram))
      throw new Error(`metric ${config.name} already registered with another type`);
    return existing as Histogram<T>;
  }
  return new Histogram<T>({ ...config, registers: [registry] });
}
