/* Unit test of the interner (csrc/lk_intern.c): one id per distinct byte string, its bytes and
** aux back, the per-report stamps, and a full table. TAP output. */
#include <stdint.h>
#include <string.h>

#include "../../csrc/lk_intern.h"
#include "tap.h"

int main(void)
{
  static lk_itab t = LK_ITAB((size_t)64 << 20, 16);
  static lk_itab small = LK_ITAB(256, 4);
  char key[64];
  size_t len;
  uint16_t aux;
  uint32_t a = lk_intern(&t, "alpha", 5, 3), b = lk_intern(&t, "beta\0x", 6, 4), ids[200];
  const char *p;
  int i, distinct = 1, full = 0;
  ok(a != 0 && b != 0 && a != b, "two strings, two ids");
  ok(lk_intern(&t, "alpha", 5, 9) == a, "the same bytes, the same id");
  ok(lk_intern(&t, "alph", 4, 0) != a, "a prefix is another string");
  p = lk_intern_get(&t, b, &len, &aux);
  ok(p && len == 6 && memcmp(p, "beta\0x", 6) == 0 && aux == 4, "the bytes (a NUL inside) and aux come back");
  ok(lk_intern_get(&t, 0, NULL, NULL) == NULL, "id 0 is none");
  for (i = 0; i < 200; i++) {  /* many more strings than its 16 buckets */
    int k;
    memset(key, 0, sizeof(key));
    key[0] = (char)i;
    key[1] = (char)(i >> 8);
    ids[i] = lk_intern(&t, key, 8 + i % 40, 0);
    for (k = 0; k < i; k++)
      if (ids[k] == ids[i] || !ids[i]) distinct = 0;
  }
  ok(distinct, "200 strings in 16 buckets: 200 ids");
  ok(lk_intern(&t, key, 8 + 199 % 40, 0) == ids[199], "found again through its bucket's chain");
  ok(!lk_intern_stamp(&t, a, 1) && lk_intern_stamp(&t, a, 1), "stamped once per report");
  ok(!lk_intern_stamp(&t, a, 2), "and again by the next report");
  ok(lk_intern_stamp(&t, 0, 1), "id 0 counts as stamped (nothing to write)");
  for (i = 0; i < 100 && !full; i++) {
    memset(key, 'k', sizeof(key));
    key[0] = (char)i;
    if (!lk_intern(&small, key, 40, 0)) full = 1;
  }
  ok(full, "a table of 256 bytes fills up, and says so with id 0");
  return done();
}
