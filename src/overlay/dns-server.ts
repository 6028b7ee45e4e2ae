import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from 'pino';
import { answerDnsQuery } from './service-dns.js';

export interface ServiceDnsServerOptions {
  /** Address to listen on (the node's overlay IP in the agent: reachable from services, the host and members). */
  host: string;
  /** UDP port; 53 in the agent, 0 (any) in tests. */
  port: number;
  /** `<org>.silo` (serviceZone). */
  zone: string;
  /** Workload name → service address, read on every query (the converged workloads document). */
  lookup: (workload: string) => string | undefined;
  logger: Logger;
}

/** The agent's small DNS server for service names (UDP; answers come from src/overlay/service-dns.ts). */
export class ServiceDnsServer {
  readonly #options: ServiceDnsServerOptions;
  readonly #logger: Logger;
  #socket: Socket | null = null;

  constructor(options: ServiceDnsServerOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ component: 'service-dns' });
  }

  /** The bound address and port once started. */
  address(): { host: string; port: number } | null {
    if (this.#socket === null) return null;
    const bound = this.#socket.address();
    return { host: bound.address, port: bound.port };
  }

  async start(): Promise<void> {
    if (this.#socket !== null) return;
    const socket = createSocket('udp4');
    socket.on('message', (message, remote) => {
      const response = answerDnsQuery(message, this.#options.zone, this.#options.lookup);
      if (response === null) return;
      socket.send(response, remote.port, remote.address, (err) => {
        if (err) this.#logger.debug({ err, to: remote.address }, 'DNS reply not sent');
      });
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(this.#options.port, this.#options.host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.on('error', (err) => this.#logger.warn({ err }, 'DNS socket error'));
    this.#socket = socket;
    this.#logger.info({ ...this.address(), zone: this.#options.zone }, 'service DNS listening');
  }

  async stop(): Promise<void> {
    const socket = this.#socket;
    this.#socket = null;
    if (socket !== null) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}
