import type { EnrollmentRecord, EnrollmentRole } from '../state/schemas.js';

/**
 * Enrollment roles (docs/protocol.md, "Enrollment roles"; docs/security.md):
 * a `client` record admits a tool to the org (connect, sync, write through
 * the rules) without making it a member for ownership. Everything that
 * counts nodes (placement, quorum denominators, SWIM members, heartbeat
 * acks and dead lists, witnesses) reads `ownershipMembers`, never the raw
 * active set; the connection gater and sender checks keep the whole set.
 */

export const ENROLLMENT_ROLES: readonly EnrollmentRole[] = ['node', 'client'];

/** A record without `role` is a node (every record signed before roles existed). */
export function roleOf(record: Pick<EnrollmentRecord, 'role'>): EnrollmentRole {
  return record.role ?? 'node';
}

export function isClient(record: Pick<EnrollmentRecord, 'role'>): boolean {
  return roleOf(record) === 'client';
}

/** The records that count for ownership: the active ones whose role is `node`. */
export function ownershipMembers<T extends Pick<EnrollmentRecord, 'role'>>(records: readonly T[]): T[] {
  return records.filter((record) => !isClient(record));
}

/** The role named on a command line, or null when it is not one. */
export function parseRole(value: string): EnrollmentRole | null {
  return ENROLLMENT_ROLES.find((role) => role === value) ?? null;
}
