// Declaration-only Core ML subset, as the bridge uses it. Signatures from Apple's documentation
// (https://developer.apple.com/documentation/coreml) page by page, as named below; availability
// in brackets (the app targets iOS 17, so every one is available).
#pragma once

#import <Foundation/Foundation.h>

#include "../PBShim.h"
#include <CoreVideo/CoreVideo.h>

NS_ASSUME_NONNULL_BEGIN

// https://developer.apple.com/documentation/coreml/mlcomputeunits
typedef NS_ENUM(NSInteger, MLComputeUnits) {
  MLComputeUnitsCPUOnly = 0,
  MLComputeUnitsCPUAndGPU = 1,
  MLComputeUnitsAll = 2,
  MLComputeUnitsCPUAndNeuralEngine = 3,  // [iOS 16]
};

// https://developer.apple.com/documentation/coreml/mlmultiarraydatatype
typedef NS_ENUM(NSInteger, MLMultiArrayDataType) {
  MLMultiArrayDataTypeDouble = 0x10000 | 64,
  MLMultiArrayDataTypeFloat64 = 0x10000 | 64,
  MLMultiArrayDataTypeFloat32 = 0x10000 | 32,
  MLMultiArrayDataTypeFloat16 = 0x10000 | 16,  // [iOS 16]
  MLMultiArrayDataTypeFloat = 0x10000 | 32,
  MLMultiArrayDataTypeInt32 = 0x20000 | 32,
};

// https://developer.apple.com/documentation/coreml/mlfeaturetype
typedef NS_ENUM(NSInteger, MLFeatureType) {
  MLFeatureTypeInvalid = 0,
  MLFeatureTypeInt64 = 1,
  MLFeatureTypeDouble = 2,
  MLFeatureTypeString = 3,
  MLFeatureTypeImage = 4,
  MLFeatureTypeMultiArray = 5,
  MLFeatureTypeDictionary = 6,
  MLFeatureTypeSequence = 7,
};

// https://developer.apple.com/documentation/coreml/mlmultiarray
@interface MLMultiArray : NSObject
// https://developer.apple.com/documentation/coreml/mlmultiarray/init(datapointer:shape:datatype:strides:deallocator:)
- (nullable instancetype)initWithDataPointer:(void *)dataPointer
                                       shape:(NSArray<NSNumber *> *)shape
                                    dataType:(MLMultiArrayDataType)dataType
                                     strides:(NSArray<NSNumber *> *)strides
                                 deallocator:(void (^_Nullable)(void *bytes))deallocator
                                       error:(NSError **)error;
// https://developer.apple.com/documentation/coreml/mlmultiarray/datapointer [deprecated iOS 15.4]
@property(readonly, nonatomic) void *dataPointer PB_DEPRECATED("Use getBytesWithHandler or getMutableBytesWithHandler");
// https://developer.apple.com/documentation/coreml/mlmultiarray/datatype
@property(readonly, nonatomic) MLMultiArrayDataType dataType;
// https://developer.apple.com/documentation/coreml/mlmultiarray/shape
@property(readonly, nonatomic) NSArray<NSNumber *> *shape;
// https://developer.apple.com/documentation/coreml/mlmultiarray/strides
@property(readonly, nonatomic) NSArray<NSNumber *> *strides;
// https://developer.apple.com/documentation/coreml/mlmultiarray/count
@property(readonly, nonatomic) NSInteger count;
// https://developer.apple.com/documentation/coreml/mlmultiarray/getbyteswithhandler: [iOS 15.4]
- (void)getBytesWithHandler:(void (NS_NOESCAPE ^)(const void *bytes, NSInteger size))handler;
@end

// https://developer.apple.com/documentation/coreml/mlimageconstraint
@interface MLImageConstraint : NSObject
@property(readonly, nonatomic) NSInteger pixelsHigh;
@property(readonly, nonatomic) NSInteger pixelsWide;
@property(readonly, nonatomic) OSType pixelFormatType;
@end

// https://developer.apple.com/documentation/coreml/mlfeaturedescription
@interface MLFeatureDescription : NSObject <NSCopying>
@property(readonly, nonatomic) NSString *name;
@property(readonly, nonatomic) MLFeatureType type;
@property(readonly, nonatomic, getter=isOptional) BOOL optional;
// https://developer.apple.com/documentation/coreml/mlfeaturedescription/imageconstraint
@property(readonly, nullable, nonatomic) MLImageConstraint *imageConstraint;
@end

// https://developer.apple.com/documentation/coreml/mlmodeldescription
@interface MLModelDescription : NSObject
// https://developer.apple.com/documentation/coreml/mlmodeldescription/inputdescriptionsbyname
@property(readonly, nonatomic) NSDictionary<NSString *, MLFeatureDescription *> *inputDescriptionsByName;
// https://developer.apple.com/documentation/coreml/mlmodeldescription/outputdescriptionsbyname
@property(readonly, nonatomic) NSDictionary<NSString *, MLFeatureDescription *> *outputDescriptionsByName;
// https://developer.apple.com/documentation/coreml/mlmodeldescription/predictedfeaturename
@property(readonly, nullable, nonatomic, copy) NSString *predictedFeatureName;
// https://developer.apple.com/documentation/coreml/mlmodeldescription/predictedprobabilitiesname
@property(readonly, nullable, nonatomic, copy) NSString *predictedProbabilitiesName;
// https://developer.apple.com/documentation/coreml/mlmodeldescription/classlabels [iOS 14]
@property(readonly, nullable, nonatomic, copy) NSArray *classLabels;
@end

// https://developer.apple.com/documentation/coreml/mlfeaturevalue
@interface MLFeatureValue : NSObject <NSCopying>
@property(readonly, nonatomic) MLFeatureType type;
// https://developer.apple.com/documentation/coreml/mlfeaturevalue/multiarrayvalue
@property(readonly, nullable, nonatomic) MLMultiArray *multiArrayValue;
// https://developer.apple.com/documentation/coreml/mlfeaturevalue/dictionaryvalue
// Apple: NSDictionary<NSObject *, NSNumber *>. GNUstep bounds dictionary keys to NSCopying, which
// NSObject * does not satisfy, so the generic arguments are left out here.
@property(readonly, nonatomic) NSDictionary *dictionaryValue;
// https://developer.apple.com/documentation/coreml/mlfeaturevalue/imagebuffervalue
@property(readonly, nullable, nonatomic) CVPixelBufferRef imageBufferValue;
// https://developer.apple.com/documentation/coreml/mlfeaturevalue/init(multiarray:)
+ (instancetype)featureValueWithMultiArray:(MLMultiArray *)value;
// https://developer.apple.com/documentation/coreml/mlfeaturevalue/init(pixelbuffer:)
+ (instancetype)featureValueWithPixelBuffer:(CVPixelBufferRef)value;
@end

// https://developer.apple.com/documentation/coreml/mlfeatureprovider
@protocol MLFeatureProvider
@property(readonly, nonatomic) NSSet<NSString *> *featureNames;
- (nullable MLFeatureValue *)featureValueForName:(NSString *)featureName;
@end

// https://developer.apple.com/documentation/coreml/mldictionaryfeatureprovider
@interface MLDictionaryFeatureProvider : NSObject <MLFeatureProvider>
// https://developer.apple.com/documentation/coreml/mldictionaryfeatureprovider/init(dictionary:)
- (nullable instancetype)initWithDictionary:(NSDictionary<NSString *, id> *)dictionary error:(NSError **)error;
@end

// https://developer.apple.com/documentation/coreml/mlmodelconfiguration
@interface MLModelConfiguration : NSObject <NSCopying>
// https://developer.apple.com/documentation/coreml/mlmodelconfiguration/computeunits
@property(readwrite) MLComputeUnits computeUnits;
@end

// https://developer.apple.com/documentation/coreml/mlmodel
@interface MLModel : NSObject
// https://developer.apple.com/documentation/coreml/mlmodel/modeldescription
@property(readonly, nonatomic) MLModelDescription *modelDescription;
// https://developer.apple.com/documentation/coreml/mlmodel/init(contentsof:configuration:) [iOS 12]
+ (nullable instancetype)modelWithContentsOfURL:(NSURL *)url
                                  configuration:(MLModelConfiguration *)configuration
                                          error:(NSError **)error;
// https://developer.apple.com/documentation/coreml/mlmodel/prediction(from:) 
- (nullable id<MLFeatureProvider>)predictionFromFeatures:(id<MLFeatureProvider>)input error:(NSError **)error;
// https://developer.apple.com/documentation/coreml/mlmodel/compilemodel(at:)-6442s [deprecated in the iOS 27 SDK]
+ (nullable NSURL *)compileModelAtURL:(NSURL *)modelURL
                                error:(NSError **)error
    PB_DEPRECATED("Use the asynchronous interface compileModelAtURL:completionHandler: instead.");
// https://developer.apple.com/documentation/coreml/mlmodel/compilemodel(at:completionhandler:) [iOS 16]
+ (void)compileModelAtURL:(NSURL *)modelURL
        completionHandler:(void (^)(NSURL *_Nullable compiledModelURL, NSError *_Nullable error))handler;
@end

NS_ASSUME_NONNULL_END
