/* ljleak tracker: interning of small byte strings (Lua stacks, tags) into stable u32 ids.
** Entries live in one reserved arena (id = offset / 8); lookup is lock-free, insert is locked. */
#include "lk_intern.h"
#include "lk_lock.h"

#include <string.h>

typedef struct lk_ientry {
  uint32_t next, hash;
  uint32_t len;
  uint32_t stamp;     /* the last report that wrote it */
  uint16_t aux;       /* caller's small number (e.g. a frame count) */
  char data[];
} lk_ientry;

/* Eight bytes a step (a Lua stack is a few hundred bytes, interned at every allocation made
** from Lua): the site hash's mixing (lk_stack.c), the length and the last partial word in it. */
static uint32_t lk_ihash(const char *b, size_t n)
{
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;
  size_t i;
  for (i = 0; i + 8 <= n; i += 8) {
    memcpy(&w, b + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  if (i < n) {
    w = 0;
    memcpy(&w, b + i, n - i);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  h = (h ^ (h >> 29)) * 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 32;
  return (uint32_t)h ? (uint32_t)h : 1;
}

static lk_ientry *lk_iget(const lk_itab *t, uint32_t id)
{
  return id ? (lk_ientry *)lk_arena_at(&t->arena, id) : NULL;
}

static uint32_t lk_ifind(const lk_itab *t, uint32_t bucket, uint32_t h, const char *b, size_t n)
{
  uint32_t id;
  const lk_ientry *e;
  for (id = __atomic_load_n(&t->buckets[bucket], __ATOMIC_ACQUIRE); id; id = e->next) {
    e = lk_iget(t, id);
    if (e->hash == h && e->len == n && memcmp(e->data, b, n) == 0) return id;
  }
  return 0;
}

uint32_t lk_intern(lk_itab *t, const void *key, size_t n, uint16_t aux)
{
  const char *b = key;
  uint32_t h = lk_ihash(b, n), slot = h & (t->nbuckets - 1), id;
  lk_ientry *e;
  if (t->buckets && (id = lk_ifind(t, slot, h, b, n))) return id;
  lk_spin_lock(&t->lock);
  if (!t->buckets) t->buckets = lk_sysmap(t->nbuckets * sizeof(uint32_t));
  id = 0;
  if (t->buckets && !(id = lk_ifind(t, slot, h, b, n)) &&
      (e = lk_arena_alloc(&t->arena, sizeof(lk_ientry) + n, &id))) {
    e->hash = h;
    e->len = (uint32_t)n;
    e->aux = aux;
    memcpy(e->data, b, n);
    e->next = t->buckets[slot];
    __atomic_store_n(&t->buckets[slot], id, __ATOMIC_RELEASE);
  }
  lk_spin_unlock(&t->lock);
  return id;
}

const void *lk_intern_get(const lk_itab *t, uint32_t id, size_t *n, uint16_t *aux)
{
  const lk_ientry *e = lk_iget(t, id);
  if (!e) return NULL;
  if (n) *n = e->len;
  if (aux) *aux = e->aux;
  return e->data;
}

/* Stamp entry ID as written by report SERIAL; 1 if it was already (or does not exist). */
int lk_intern_stamp(lk_itab *t, uint32_t id, uint32_t serial)
{
  lk_ientry *e = lk_iget(t, id);
  if (!e || e->stamp == serial) return 1;
  e->stamp = serial;
  return 0;
}
