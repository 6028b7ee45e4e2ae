/**
 * Freezes `value` and everything reachable from it, for values shared by
 * many readers (cached views), so that a caller's mutation throws instead of
 * silently changing what the next caller reads.
 */
export function deepFreeze<T>(value: T): Readonly<T> {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value;
  for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<PropertyKey, unknown>)[key]);
  return Object.freeze(value);
}
