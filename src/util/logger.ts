import pino, { type Logger } from 'pino';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

export interface LoggerOptions {
  level: LogLevel;
  /** "auto": pretty when stderr is a terminal. */
  pretty: 'auto' | 'always' | 'never';
  /** Fields on every line (e.g. the node id, so many agents can share one stream). */
  base?: Record<string, unknown>;
}

/** The agent's root logger: JSON lines on stderr, or pino-pretty in a terminal. */
export function createLogger(options: LoggerOptions): Logger {
  const pretty = options.pretty === 'always' || (options.pretty === 'auto' && process.stderr.isTTY === true);
  if (pretty) {
    return pino({
      level: options.level,
      base: options.base ?? null,
      transport: {
        target: 'pino-pretty',
        options: { destination: 2, colorize: true, ignore: 'pid,hostname' },
      },
    });
  }
  return pino({ level: options.level, base: options.base ?? null }, pino.destination(2));
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
