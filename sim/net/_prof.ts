import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
export async function startProfile(): Promise<() => Promise<void>> {
  const s = new Session(); s.connect();
  await s.post('Profiler.enable'); await s.post('Profiler.start');
  return async () => { const { profile } = await s.post('Profiler.stop'); writeFileSync('/tmp/warm.cpuprofile', JSON.stringify(profile)); };
}
