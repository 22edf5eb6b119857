/* A thread that is not main forks; in the child a new thread (which takes the place the tracker
** kept for the parent's main thread) holds 4 blocks of 77 bytes on its own stack only, and the
** child exits while it waits: they are reachable, not lost. The child also loses one block of 55
** bytes (lost_in_child). The parent waits for the child and exits cleanly. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static int holding;

static void *holder(void *arg)
{
  char *volatile held[4];    /* in this frame's memory, not only in registers */
  int i;
  (void)arg;
  for (i = 0; i < 4; i++) {
    held[i] = malloc(77);
    memset(held[i], 7, 77);
  }
  pthread_mutex_lock(&lock);
  holding = 1;
  pthread_cond_signal(&ready);
  pthread_mutex_unlock(&lock);
  for (;;) pause();   /* the blocks stay in this frame */
  return NULL;
}

static char *volatile last;   /* the lost block passes through it (the malloc is not elided) */

__attribute__((noinline)) static void lost_in_child(void)
{
  last = malloc(55);
  memset(last, 5, 55);
  last = NULL;
}

static void *forker(void *arg)
{
  pid_t pid;
  (void)arg;
  pid = fork();
  if (pid == 0) {
    pthread_t t;
    pthread_create(&t, NULL, holder, NULL);
    pthread_mutex_lock(&lock);
    while (!holding) pthread_cond_wait(&ready, &lock);
    pthread_mutex_unlock(&lock);
    lost_in_child();
    exit(0);
  }
  waitpid(pid, NULL, 0);
  return NULL;
}

int main(void)
{
  pthread_t t;
  pthread_create(&t, NULL, forker, NULL);
  pthread_join(t, NULL);
  return 0;
}
