import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

import type { NativeFamily } from '../binding.js';
import { invalidArgType, invalidArgValue, validateInteger, validateObject } from '../errors.js';

/** Where to listen or connect: a TCP host and port, or a Unix domain socket path. */
export type Endpoint = { host?: string; port: number; path?: undefined } | { path: string; host?: undefined; port?: undefined };

export interface ResolvedEndpoint {
  family: NativeFamily;
  host: string;
  port: number;
}

/** Validates an endpoint and resolves a host name to a numeric address (as Node's net does). */
export async function resolveEndpoint(name: string, options: unknown, defaultHost: string, minPort: number): Promise<ResolvedEndpoint> {
  validateObject(name, options);
  if (options.path !== undefined) {
    if (typeof options.path !== 'string' || options.path.length === 0) {
      throw invalidArgType(`${name}.path`, 'a non-empty string', options.path);
    }
    // The kernel would take the path only up to the NUL (node:net refuses it too). A leading NUL
    // is something else: Linux's abstract namespace, whose names are bytes.
    if (options.path[0] !== '\0' && options.path.includes('\0')) {
      throw invalidArgValue(`${name}.path`, 'a string without null bytes (but for the leading one of an abstract name)', options.path);
    }
    return { family: 0, host: options.path, port: 0 };
  }
  validateInteger(`${name}.port`, options.port, minPort, 65535);
  const host = options.host ?? defaultHost;
  if (typeof host !== 'string' || host.length === 0) throw invalidArgType(`${name}.host`, 'a non-empty string', host);
  const version = isIP(host);
  if (version !== 0) return { family: version as 4 | 6, host, port: options.port };
  const resolved = await lookup(host);
  return { family: resolved.family as 4 | 6, host: resolved.address, port: options.port };
}
