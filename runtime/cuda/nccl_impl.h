/* nccl_impl.h - private to runtime/cuda/: what nccl_sym.c needs of an NCCL communicator
 * (nccl.c owns the struct). */
#ifndef SLUICE_NCCL_IMPL_H
#define SLUICE_NCCL_IMPL_H

struct rt_comm;

void *rt_comm_nccl(const struct rt_comm *c);      /* its ncclComm_t */
int rt_comm_max_ctas(const struct rt_comm *c);    /* the SM bound, 0: none given */
void *rt_comm_stream(struct rt_comm *c, void *stream); /* NULL: the communication stream */

#endif
