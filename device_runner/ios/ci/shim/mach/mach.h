// Declaration-only Mach subset used for memory figures.
// task_info: https://developer.apple.com/documentation/kernel/1537934-task_info
// mach_task_self: https://developer.apple.com/documentation/kernel/1537751-mach_task_self
// TASK_VM_INFO and task_vm_info_data_t (phys_footprint): Apple's published XNU header
// osfmk/mach/task_info.h, https://opensource.apple.com/source/xnu/xnu-4570.71.2/osfmk/mach/task_info.h.auto.html
// (fields up to phys_footprint, which is all the code reads; the count covers exactly those).
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int kern_return_t;
typedef unsigned int natural_t;
typedef int integer_t;
typedef natural_t mach_port_t;
typedef mach_port_t task_t;
typedef mach_port_t task_name_t;
typedef natural_t task_flavor_t;
typedef integer_t *task_info_t;
typedef natural_t mach_msg_type_number_t;
typedef uint64_t mach_vm_size_t;
#define KERN_SUCCESS 0

mach_port_t mach_task_self(void);
kern_return_t task_info(task_name_t target_task, task_flavor_t flavor, task_info_t task_info_out,
                        mach_msg_type_number_t *task_info_outCnt);

#define TASK_VM_INFO 22
#pragma pack(push, 4)
typedef struct task_vm_info {
  mach_vm_size_t virtual_size;
  integer_t region_count;
  integer_t page_size;
  mach_vm_size_t resident_size;
  mach_vm_size_t resident_size_peak;
  mach_vm_size_t device;
  mach_vm_size_t device_peak;
  mach_vm_size_t internal;
  mach_vm_size_t internal_peak;
  mach_vm_size_t external;
  mach_vm_size_t external_peak;
  mach_vm_size_t reusable;
  mach_vm_size_t reusable_peak;
  mach_vm_size_t purgeable_volatile_pmap;
  mach_vm_size_t purgeable_volatile_resident;
  mach_vm_size_t purgeable_volatile_virtual;
  mach_vm_size_t compressed;
  mach_vm_size_t compressed_peak;
  mach_vm_size_t compressed_lifetime;
  mach_vm_size_t phys_footprint;
} task_vm_info_data_t;
#pragma pack(pop)
#define TASK_VM_INFO_COUNT ((mach_msg_type_number_t)(sizeof(task_vm_info_data_t) / sizeof(natural_t)))

#ifdef __cplusplus
}
#endif
