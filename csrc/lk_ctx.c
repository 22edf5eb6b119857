/* ljleak tracker: contexts. A context is (snapshot epoch, tag, note), interned; new sites carry
** the current one (set by the Lua API: tags, snapshots; notes by ljleak_annotate). */
#include "lk_ctx.h"
#include "lk_intern.h"
#include "lk_lock.h"

#include <string.h>

volatile uint32_t lk_ctx;

static lk_itab lk_ctxs = LK_ITAB((size_t)64 << 20, (size_t)1 << 14);

void lk_ctx_init(void)
{
  lk_lock_register(&lk_ctxs.lock);
}

uint32_t lk_ctx_make(uint32_t epoch, const char *tag, const char *note)
{
  char b[4096];
  size_t lt = tag ? strnlen(tag, 2000) : 0, ln = note ? strnlen(note, 2000) : 0;
  memcpy(b, &epoch, 4);
  if (lt) memcpy(b + 4, tag, lt);
  b[4 + lt] = 0;
  if (ln) memcpy(b + 5 + lt, note, ln);
  b[5 + lt + ln] = 0;
  return lk_intern(&lk_ctxs, b, 6 + lt + ln, 0);
}

/* Parts of a context: its tag (NULL if none); *epoch and *note filled when asked. */
const char *lk_ctx_tag(uint32_t ctx, uint32_t *epoch, const char **note)
{
  const char *p = lk_intern_get(&lk_ctxs, ctx, NULL, NULL);
  uint32_t e = 0;
  if (p) memcpy(&e, p, 4);
  if (epoch) *epoch = e;
  if (note) *note = p && p[4 + strlen(p + 4) + 1] ? p + 4 + strlen(p + 4) + 1 : NULL;
  return p && p[4] ? p + 4 : NULL;
}

int lk_ctx_stamp(uint32_t ctx, uint32_t serial) { return lk_intern_stamp(&lk_ctxs, ctx, serial); }
