/*
 * The pod sandbox ("pause") process for the e2e cluster, in the spirit of
 * Kubernetes' build/pause/linux/pause.c: hold the pod's namespaces open,
 * reap any child that is reparented to us (we are PID 1 of the pod when the
 * PID namespace is shared), and exit cleanly on SIGINT or SIGTERM.
 * Built with `gcc -static` by e2e/cluster; the image is FROM scratch.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_chld(int sig) {
  (void)sig;
  /* Reap every exited child; never block. */
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    printf("hatchway-pause 3.10.1\n");
    return 0;
  }
  if (getpid() != 1) {
    fprintf(stderr, "warning: pause should be the first process\n");
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_term;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
    perror("sigaction");
    return 1;
  }
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGCHLD, &sa, NULL) < 0) {
    perror("sigaction");
    return 2;
  }

  for (;;) {
    pause();
  }
  return 42; /* not reached */
}
