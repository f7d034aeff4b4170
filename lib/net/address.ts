import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

import type { NativeFamily } from '../binding.js';
import { invalidArgType, invalidArgValue, validateFunction, validateInteger, validateObject, validateWithoutNullBytes } from '../errors.js';

/** Where to listen or connect: a TCP host and port, or a Unix domain socket path. */
export type Endpoint = { host?: string; port: number; path?: undefined } | { path: string; host?: undefined; port?: undefined };

export interface ResolvedEndpoint {
  family: NativeFamily;
  host: string;
  port: number;
}

/** An address a host name resolves to, as `dns.lookup` gives it. */
export interface LookupAddress {
  address: string;
  family: number;
}

/**
 * A host name resolver with the signature of `dns.lookup` (Node's `lookup` option of
 * `net.connect`). It is called with `{ family, all: true }` and may answer with one address or
 * all of them.
 */
export type LookupFunction = (
  hostname: string,
  options: { family: 0 | 4 | 6; all: true },
  callback: (error: Error | null, address: string | LookupAddress[], family?: number) => void,
) => void;

/** How `connect` turns a host name into the addresses it tries. */
export interface ResolveOptions {
  /** 4 or 6: only addresses of that family; 0: both. */
  family: 0 | 4 | 6;
  /** Every address (interleaved by family) or only the first. */
  all: boolean;
  lookup: LookupFunction | undefined;
}

/**
 * Validates a connect endpoint and resolves a host name to the numeric addresses to try, in the
 * order Node's `autoSelectFamily` tries them: the resolver's first, then alternating families.
 */
export async function resolveConnectEndpoints(name: string, options: unknown, resolve: ResolveOptions): Promise<ResolvedEndpoint[]> {
  validateObject(name, options);
  // Each read once: a getter could answer one value to the check and another to the use.
  const { host: givenHost, port, path } = options;
  const host = givenHost ?? 'localhost';
  if (path !== undefined) return [await resolveEndpoint(name, { path }, 'localhost', 1)];
  validateInteger(`${name}.port`, port, 1, 65535);
  validateHost(`${name}.host`, host);
  const version = numericVersion(`${name}.host`, host);
  if (version !== 0) return [{ family: version as 4 | 6, host, port }];
  const found = await lookupAll(host, resolve);
  const usable = found.filter((entry) => (entry.family === 4 || entry.family === 6) && isIP(entry.address) === entry.family);
  if (usable.length === 0) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: host });
  const endpoints = usable.map(({ address, family }) => ({ family: family as 4 | 6, host: address, port }));
  return resolve.all ? interleaveFamilies(endpoints) : endpoints.slice(0, 1);
}

function validateHost(name: string, host: unknown): asserts host is string {
  if (typeof host !== 'string' || host.length === 0) throw invalidArgType(name, 'a non-empty string', host);
  validateWithoutNullBytes(name, host);
}

/**
 * 4 or 6 for a numeric address, 0 for a host name. An IPv6 address with a zone ('fe80::1%eth0'),
 * which isIP() takes, is refused: the native side parses addresses with inet_pton, which has no
 * zones, and no scope id crosses to it, so the kernel would answer a bare EINVAL.
 */
export function numericVersion(name: string, address: string): number {
  const version = isIP(address);
  if (version === 6 && address.includes('%')) throw invalidArgValue(name, 'an IPv6 address without a zone id (%interface is not supported)', address);
  return version;
}

export function validateLookup(name: string, value: unknown): asserts value is LookupFunction | undefined {
  if (value !== undefined) validateFunction(name, value);
}

function lookupAll(host: string, { family, lookup: custom }: ResolveOptions): Promise<LookupAddress[]> {
  if (custom === undefined) return lookup(host, { family, all: true });
  return new Promise((resolve, reject) => {
    custom(host, { family, all: true }, (error, address, addressFamily) => {
      if (error) reject(error);
      else if (Array.isArray(address)) resolve(address);
      else resolve([{ address, family: addressFamily ?? isIP(address) }]);
    });
  });
}

// As Node's autoSelectFamily: the first address's family first, then the other, in turns.
function interleaveFamilies(endpoints: ResolvedEndpoint[]): ResolvedEndpoint[] {
  const first = endpoints[0]!.family;
  const same = endpoints.filter((entry) => entry.family === first);
  const other = endpoints.filter((entry) => entry.family !== first);
  const result: ResolvedEndpoint[] = [];
  for (let i = 0; i < Math.max(same.length, other.length); i++) {
    if (i < same.length) result.push(same[i]!);
    if (i < other.length) result.push(other[i]!);
  }
  return result;
}

/** Validates an endpoint and resolves a host name to a numeric address (as Node's net does). */
export async function resolveEndpoint(name: string, options: unknown, defaultHost: string, minPort: number): Promise<ResolvedEndpoint> {
  validateObject(name, options);
  // Each read once: a getter could answer one value to the check and another to the use.
  const { host: givenHost, port, path } = options;
  const host = givenHost ?? defaultHost;
  if (path !== undefined) {
    if (typeof path !== 'string' || path.length === 0) throw invalidArgType(`${name}.path`, 'a non-empty string', path);
    // As node:net. A leading NUL is something else: Linux's abstract namespace, whose names are bytes.
    if (path[0] !== '\0') validateWithoutNullBytes(`${name}.path`, path);
    return { family: 0, host: path, port: 0 };
  }
  validateInteger(`${name}.port`, port, minPort, 65535);
  validateHost(`${name}.host`, host);
  const version = numericVersion(`${name}.host`, host);
  if (version !== 0) return { family: version as 4 | 6, host, port };
  const resolved = await lookup(host);
  return { family: resolved.family as 4 | 6, host: resolved.address, port };
}
