/* Unit test of lk_vmlayout.h: the tracker learns where cur_L, vmstate and jit_base are in a
** LuaJIT build's global_State from three probes. Fake global_States laid out as released builds
** are (and as a future one might be) must be recognised; broken ones must be refused. TAP output. */
#include <stdio.h>
#include <string.h>

#include "../../csrc/lk_vmlayout.h"

static int failed, n;

static void ok(int cond, const char *what)
{
  n++;
  if (!cond) failed++;
  printf("%s %d - %s\n", cond ? "ok" : "not ok", n, what);
}

typedef struct fake { char g[LK_VM_SCAN]; } fake;

/* A global_State with cur_L at curl, vmstate at vms (-1: none) and jit_base after cur_L; decoy
** pointer words elsewhere that hold the first lua_State only (mainthref, say) or all of them. */
static void set(fake *f, int curl, int vms, const void *L, int decoy_all)
{
  int32_t st = LK_VMST_C;
  const void *null = NULL, *main_thread = (const void *)0x1000;
  memcpy(f->g + curl, &L, sizeof(L));
  memcpy(f->g + curl + 8, &null, sizeof(null));
  if (vms >= 0) memcpy(f->g + vms, &st, 4);
  memcpy(f->g + 64, &main_thread, sizeof(main_thread));
  if (decoy_all) memcpy(f->g + 512, &L, sizeof(L));
}

static const char *learn(int curl, int vms, int decoy_all, lk_vm_layout *lay)
{
  static fake f;
  lk_vm_probe p;
  const void *L1 = (const void *)0x7f0000001000, *L2 = (const void *)0x7f0000002000,
             *L3 = (const void *)0x7f0000003000;
  memset(&f, 0x5a, sizeof(f));
  set(&f, curl, vms, L1, decoy_all);
  memcpy(f.g + 32, &L1, sizeof(L1));   /* a stale copy: must not survive the next probes */
  lk_vm_probe_first(&p, f.g, L1);
  set(&f, curl, vms, L2, decoy_all);
  lk_vm_probe_next(&p, f.g, L2);
  set(&f, curl, vms, L3, decoy_all);
  lk_vm_probe_next(&p, f.g, L3);
  return lk_vm_layout_of(&p, f.g, lay);
}

int main(void)
{
  lk_vm_layout lay;
  const char *why;

  why = learn(368, 184, 0, &lay);   /* luajit2 2.1-2021..2024, upstream 2020..Oct 2025 */
  ok(!why && lay.curl == 368 && lay.vmstate == 184 && lay.jitbase == 376, "luajit2 2.1-20230119 layout");
  why = learn(376, 184, 0, &lay);   /* upstream after Nov 2025: cur_L moved by 8 bytes */
  ok(!why && lay.curl == 376 && lay.vmstate == 184 && lay.jitbase == 384, "upstream 2.1 layout of late 2025");
  why = learn(344, 128, 0, &lay);   /* before mid-2020 */
  ok(!why && lay.curl == 344 && lay.vmstate == 128 && lay.jitbase == 352, "2.1 layout before 2020");
  why = learn(400, 200, 0, &lay);   /* a build nobody has seen yet */
  ok(!why && lay.curl == 400 && lay.vmstate == 200, "an unseen layout, learnt from the probes alone");
  why = learn(368, -1, 0, &lay);
  ok(why && strstr(why, "vmstate") != NULL, "refused: no vmstate word says \"C\"");
  why = learn(368, 184, 1, &lay);
  ok(why && strstr(why, "several") != NULL, "refused: two words follow the running lua_State");
  {
    static fake f;
    lk_vm_probe p;
    const void *L = (const void *)0x7f0000001000;
    memset(&f, 0x5a, sizeof(f));
    lk_vm_probe_first(&p, f.g, L);
    why = lk_vm_layout_of(&p, f.g, &lay);
    ok(why && strstr(why, "cur_L") != NULL, "refused: nothing follows the running lua_State");
  }
  {
    static fake f;
    lk_vm_probe p;
    const void *L = (const void *)0x7f0000001000, *busy = (const void *)0x1234;
    memset(&f, 0x5a, sizeof(f));
    set(&f, 368, 184, L, 0);
    memcpy(f.g + 376, &busy, sizeof(busy));
    lk_vm_probe_first(&p, f.g, L);
    why = lk_vm_layout_of(&p, f.g, &lay);
    ok(why && strstr(why, "jit_base") != NULL, "refused: the word after cur_L is not NULL");
  }
  printf("1..%d\n", n);
  return failed != 0;
}
