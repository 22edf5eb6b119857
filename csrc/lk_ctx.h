/* ljleak tracker: contexts. A context is (snapshot epoch, tag, note), interned; new sites carry
** the current one. */
#ifndef LK_CTX_H
#define LK_CTX_H

#include "lk_def.h"

extern volatile uint32_t lk_ctx;         /* the context stamped on new sites */
void lk_ctx_init(void);
uint32_t lk_ctx_make(uint32_t epoch, const char *tag, const char *note);  /* 0 if full */
const char *lk_ctx_tag(uint32_t ctx, uint32_t *epoch, const char **note);  /* NULL: no tag */
int lk_ctx_stamp(uint32_t ctx, uint32_t serial);  /* set; 1 if it had it already */

#endif
