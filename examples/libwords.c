/* A small C library for ljleak's demo: splits text into words. It has a bug:
** words_free() frees the array but forgets the strings in it. */
#include <stdlib.h>
#include <string.h>

typedef struct words {
  int n;
  char **w;
} words;

words *words_split(const char *text)
{
  words *ws = calloc(1, sizeof(*ws));
  const char *p = text;
  ws->w = calloc(strlen(text) / 2 + 1, sizeof(char *));
  while (*p) {
    size_t len;
    while (*p == ' ') p++;
    len = strcspn(p, " ");
    if (len) ws->w[ws->n++] = strndup(p, len);
    p += len;
  }
  return ws;
}

int words_count(const words *ws) { return ws->n; }

void words_free(words *ws)
{
  free(ws->w);  /* bug: the strings ws->w[i] are never freed */
  free(ws);
}
